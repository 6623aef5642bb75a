# Finds the project's dependencies, all of them Debian packages (see DEVELOPERS.md and
# third_party/install_deps.sh). Where one is missing, configuration stops and names the
# package that provides it. Nothing is downloaded.
#
# The header-only ones (nlohmann_json, Catch2) may instead come from third_party/vendored/,
# which third_party/vendor_headers.sh fills from a Debian machine: those copies are used only
# where find_package() finds no installed package (a machine without Debian's -dev packages,
# such as the GPU machine of bench/gpu_check.sh).

function(alexnet_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR
      "${what} was not found. On Debian 12 install it with:\n"
      "  sudo apt-get install ${package}\n"
      "or run third_party/install_deps.sh, which installs every dependency.")
  endif()
endfunction()

set(ALEXNET_VENDORED_DIR "${PROJECT_SOURCE_DIR}/third_party/vendored"
    CACHE PATH "Header-only dependencies copied by third_party/vendor_headers.sh")

# PyTorch's CMake files of some 2.x versions make torch::nvtoolsext link CUDA::nvToolsExt, the
# NVTX 2 library, which CUDA 12.9 and later no longer ship (NVTX 3 is header-only); configuring
# then fails with "the target was not found". -DALEXNET_NVTX3_SHIM=ON lets NVTX 3 stand in.
option(ALEXNET_NVTX3_SHIM "Define CUDA::nvToolsExt as NVTX 3 before finding a CUDA LibTorch" OFF)
if(ALEXNET_NVTX3_SHIM)
  find_package(CUDAToolkit REQUIRED)
  if(NOT TARGET CUDA::nvToolsExt AND TARGET CUDA::nvtx3)
    add_library(CUDA::nvToolsExt INTERFACE IMPORTED)
    target_link_libraries(CUDA::nvToolsExt INTERFACE CUDA::nvtx3)
    message(STATUS "CUDA::nvToolsExt: NVTX 3 (CUDA::nvtx3) stands in")
  endif()
endif()

# LibTorch: Debian's libtorch-dev (1.13, CPU) or, through CMAKE_PREFIX_PATH, the LibTorch
# inside a PyTorch 2.x installation (CUDA builds included).
find_package(Torch QUIET)
alexnet_require(Torch_FOUND "LibTorch (TorchConfig.cmake)" "libtorch-dev")
message(STATUS "LibTorch ${Torch_VERSION} at ${TORCH_INSTALL_PREFIX}")
# TorchConfig puts its flags (e.g. -D_GLIBCXX_USE_CXX11_ABI) into TORCH_CXX_FLAGS.
string(APPEND CMAKE_CXX_FLAGS " ${TORCH_CXX_FLAGS}")

set(ALEXNET_WITH_CUDA OFF)
if(TARGET torch_cuda OR TARGET c10_cuda OR CUDA_FOUND)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    set(ALEXNET_WITH_CUDA ON)
  else()
    message(WARNING "LibTorch has CUDA but no CUDA compiler was found: the CUDA LRN kernel is skipped.")
  endif()
endif()
message(STATUS "CUDA kernels: ${ALEXNET_WITH_CUDA}")
set(ALEXNET_WITH_CUDA ${ALEXNET_WITH_CUDA} CACHE INTERNAL "")

find_package(nlohmann_json 3 QUIET)
if(NOT nlohmann_json_FOUND AND EXISTS "${ALEXNET_VENDORED_DIR}/include/nlohmann/json.hpp")
  add_library(nlohmann_json::nlohmann_json INTERFACE IMPORTED)
  set_target_properties(nlohmann_json::nlohmann_json PROPERTIES
    INTERFACE_INCLUDE_DIRECTORIES "${ALEXNET_VENDORED_DIR}/include")
  set(nlohmann_json_FOUND TRUE)
  message(STATUS "nlohmann_json: vendored copy in ${ALEXNET_VENDORED_DIR}/include")
endif()
alexnet_require(nlohmann_json_FOUND "nlohmann_json" "nlohmann-json3-dev")

find_package(Threads REQUIRED)

# zlib reads gzip-compressed IDX files; without it (-DALEXNET_WITH_ZLIB=OFF, or no zlib1g-dev)
# such files are refused with a message that says to gunzip them.
find_package(ZLIB QUIET)
option(ALEXNET_WITH_ZLIB "Read gzip-compressed IDX files (needs zlib1g-dev)" ${ZLIB_FOUND})
if(ALEXNET_WITH_ZLIB)
  alexnet_require(ZLIB_FOUND "zlib (for gzip-compressed IDX files)"
                  "zlib1g-dev  (or configure with -DALEXNET_WITH_ZLIB=OFF)")
endif()
message(STATUS "zlib (gzip-compressed IDX files): ${ALEXNET_WITH_ZLIB}")

if(ALEXNET_WITH_OPENCV)
  find_package(OpenCV QUIET COMPONENTS core imgproc imgcodecs)
  alexnet_require(OpenCV_FOUND "OpenCV (core, imgproc, imgcodecs)"
                  "libopencv-dev  (or configure with -DALEXNET_WITH_OPENCV=OFF)")
  message(STATUS "OpenCV ${OpenCV_VERSION}")
  # JPEGs are decoded with libjpeg directly, whose warnings reveal corrupt data (OpenCV's
  # decoder hides them).
  find_package(JPEG QUIET)
  alexnet_require(JPEG_FOUND "libjpeg (jpeglib.h, for decoding JPEGs)"
                  "libjpeg62-turbo-dev  (or configure with -DALEXNET_WITH_OPENCV=OFF)")
  message(STATUS "libjpeg ${JPEG_VERSION}")
  # OpenCV's DNN module (libopencv-dnn-dev, part of libopencv-dev) runs exported ONNX models:
  # `predict --model model.onnx`, and `export --format onnx` checks its file with it.
  # OpenCV's configuration imports a target for every installed module.
  set(_alexnet_have_dnn OFF)
  if(TARGET opencv_dnn)
    set(_alexnet_have_dnn ON)
  endif()
  option(ALEXNET_WITH_OPENCV_DNN "Run ONNX models with OpenCV's DNN module" ${_alexnet_have_dnn})
  if(ALEXNET_WITH_OPENCV_DNN AND NOT TARGET opencv_dnn)
    message(FATAL_ERROR "OpenCV's DNN module was not found. On Debian 12 install it with:\n"
                        "  sudo apt-get install libopencv-dnn-dev\n"
                        "or configure with -DALEXNET_WITH_OPENCV_DNN=OFF.")
  endif()
  message(STATUS "OpenCV DNN (runs ONNX models): ${ALEXNET_WITH_OPENCV_DNN}")
else()
  set(ALEXNET_WITH_OPENCV_DNN OFF)
endif()

if(ALEXNET_BUILD_TESTS)
  find_package(Catch2 2 QUIET)
  if(NOT Catch2_FOUND AND EXISTS "${ALEXNET_VENDORED_DIR}/include/catch2/catch.hpp"
     AND EXISTS "${ALEXNET_VENDORED_DIR}/cmake/Catch.cmake")
    add_library(Catch2::Catch2 INTERFACE IMPORTED)
    set_target_properties(Catch2::Catch2 PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${ALEXNET_VENDORED_DIR}/include")
    # include(Catch) then finds the vendored Catch.cmake, as an installed Catch2 would.
    list(APPEND CMAKE_MODULE_PATH "${ALEXNET_VENDORED_DIR}/cmake")
    set(Catch2_FOUND TRUE)
    message(STATUS "Catch2: vendored copy in ${ALEXNET_VENDORED_DIR}")
  endif()
  alexnet_require(Catch2_FOUND "Catch2 v2" "catch2")
  # The ONNX checker (libonnx-dev) validates exported ONNX files in tests/test_onnx.cpp; without
  # it that check skips itself and says so.
  find_package(Protobuf QUIET)
  if(Protobuf_FOUND)
    find_package(ONNX QUIET CONFIG)
  endif()
  set(ALEXNET_WITH_ONNX_CHECKER OFF)
  if(ONNX_FOUND AND TARGET onnx)
    set(ALEXNET_WITH_ONNX_CHECKER ON)
  endif()
  message(STATUS "ONNX checker for the tests (libonnx-dev): ${ALEXNET_WITH_ONNX_CHECKER}")
endif()
