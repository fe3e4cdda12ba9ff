"""Captioning: the first stage of GPT4Image (see docs/captioning.md)."""
