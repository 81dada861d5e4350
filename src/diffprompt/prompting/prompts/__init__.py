"""The prompt parts: templates, verbalizers, the soft-token encoder, demonstrations, calibration."""
