"""MLflow: votes as assessments on traces (:mod:`.source`) and prompts in the registry (:mod:`.registry`)."""
