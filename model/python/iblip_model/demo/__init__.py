"""The demo model: a tiny InstructBLIP trained on synthetic visual questions."""
