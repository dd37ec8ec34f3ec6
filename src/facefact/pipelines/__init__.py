"""Generation pipelines: reference photos + prompt -> portraits."""
