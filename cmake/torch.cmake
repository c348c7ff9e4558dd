# Which LibTorch the runtime builds against (README, "GPU serving").
#
#   default                    Debian's (libtorch-dev, CPU only): CI and the
#                              CPU image, exactly as before.
#   -DTorch_DIR=<dir>          any LibTorch's CMake package, e.g. PyTorch's
#                              CUDA LibTorch zip: <libtorch>/share/cmake/Torch.
#   -DIBLIP_TORCH_PYTHON=<py>  the LibTorch inside that Python's torch wheel
#                              (torch.utils.cmake_prefix_path), CUDA or not.
#
# The server links gRPC, protobuf and absl from Debian, built with the C++11
# ABI of std::string; a LibTorch built with the old ABI cannot link with
# them, so that is refused here rather than at link time.
set(IBLIP_TORCH_PYTHON "" CACHE FILEPATH
    "a Python whose torch wheel provides LibTorch (instead of Debian's)")
if(IBLIP_TORCH_PYTHON)
  execute_process(
    COMMAND ${IBLIP_TORCH_PYTHON} -c "import torch.utils; print(torch.utils.cmake_prefix_path)"
    OUTPUT_VARIABLE IBLIP_TORCH_PREFIX OUTPUT_STRIP_TRAILING_WHITESPACE
    RESULT_VARIABLE IBLIP_TORCH_PYTHON_RESULT)
  if(NOT IBLIP_TORCH_PYTHON_RESULT EQUAL 0 OR NOT EXISTS "${IBLIP_TORCH_PREFIX}/Torch")
    message(FATAL_ERROR "IBLIP_TORCH_PYTHON=${IBLIP_TORCH_PYTHON}: cannot import torch "
                        "or find its CMake package (torch.utils.cmake_prefix_path)")
  endif()
  set(Torch_DIR "${IBLIP_TORCH_PREFIX}/Torch" CACHE PATH "LibTorch's CMake package" FORCE)
endif()
find_package(Torch REQUIRED)
if(TORCH_CXX_FLAGS MATCHES "_GLIBCXX_USE_CXX11_ABI=0")
  message(FATAL_ERROR "The LibTorch at ${Torch_DIR} uses the pre-C++11 std::string ABI "
                      "(_GLIBCXX_USE_CXX11_ABI=0) and cannot link with Debian's gRPC/protobuf/absl: "
                      "use a cxx11-ABI LibTorch (PyTorch's 'cxx11 ABI' zip, or a wheel from 2.7 on)")
endif()
# Whether this LibTorch can use CUDA at all (its config sets the CUDA
# libraries); whether a GPU is there is the server's question at startup
# (runtime.device).
if(TORCH_LIBRARIES MATCHES "cuda" OR CAFFE2_USE_CUDA OR TARGET torch_cuda)
  set(IBLIP_TORCH_HAS_CUDA ON)
else()
  set(IBLIP_TORCH_HAS_CUDA OFF)
endif()
message(STATUS "LibTorch ${Torch_VERSION} from ${Torch_DIR} (CUDA: ${IBLIP_TORCH_HAS_CUDA})")
