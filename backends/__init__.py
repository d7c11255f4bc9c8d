"""effc backends: build, load and run compiled programs."""
