// Compiles the one precompiled header of <torch/torch.h> that every target reuses
// (see alexnet_use_torch_pch in the top-level CMakeLists.txt).
