"""Our PyTorch InstructBLIP. Module and parameter names follow Hugging Face's
InstructBlipForConditionalGeneration, so its state dicts load as they are.
Everything here is TorchScript-compatible (Final constants, no globals)."""
