"""Dispatch: cluster profiles (profiles), submission (submit, through a backend: local, slurm),
scheduler sync (sync), cancel and retry (control). Import the module you need: nothing here is
imported eagerly, so `isoflop status` stays fast."""
