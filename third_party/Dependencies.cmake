# Finds the project's dependencies, all of them Debian packages (see DEVELOPERS.md and
# third_party/install_deps.sh). Where one is missing, configuration stops and names the
# package that provides it. Nothing is downloaded.

function(alexnet_require found what package)
  if(NOT ${found})
    message(FATAL_ERROR
      "${what} was not found. On Debian 12 install it with:\n"
      "  sudo apt-get install ${package}\n"
      "or run third_party/install_deps.sh, which installs every dependency.")
  endif()
endfunction()

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
alexnet_require(nlohmann_json_FOUND "nlohmann_json" "nlohmann-json3-dev")

find_package(Threads REQUIRED)

find_package(ZLIB QUIET)
alexnet_require(ZLIB_FOUND "zlib (for gzip-compressed IDX files)" "zlib1g-dev")

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
endif()

if(ALEXNET_BUILD_TESTS)
  find_package(Catch2 2 QUIET)
  alexnet_require(Catch2_FOUND "Catch2 v2" "catch2")
endif()
