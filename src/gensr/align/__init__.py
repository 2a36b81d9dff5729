"""DPO alignment: the pure preference loss, pair tensors and the Lightning module (torch imported lazily)."""
