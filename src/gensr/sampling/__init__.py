"""Seeded restoration of degraded clips: candidates for pairs and restorations for evaluation."""
