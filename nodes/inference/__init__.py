"""inference-service: feature vectors through the declared models (promoted trained models, rule strategies) into raw signals."""
