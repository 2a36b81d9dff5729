"""Audio IO and signal helpers. All audio is mono float32 at the pipeline rate (16 kHz)."""
