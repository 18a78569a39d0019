# SPDX-License-Identifier: Apache-2.0
# Finds Kokkos and Kokkos Kernels and defines one target, schatten::kokkos_deps, that carries
# their include directories and libraries. Used by our own build and by the installed
# schattenConfig.cmake, so that a consumer gets exactly the same dependency resolution.
#
# Two kinds of installation are supported:
#  * Kokkos 4.x (a user install, any backend): the targets Kokkos::kokkos and
#    Kokkos::kokkoskernels exist and are used as they are.
#  * Debian's Trilinos 13.2 packages (Kokkos 3.4.01, Serial): the imported Kokkos::kokkos target
#    carries a wrong include directory (/usr/lib/include) and there is no Kokkos::kokkoskernels
#    target (../shared/docs/kokkos.md). We build the target from the package variables
#    KokkosKernels_INCLUDE_DIRS / _LIBRARY_DIRS / _LIBRARIES instead.
include_guard(GLOBAL)

macro(schatten_find_kokkos)
  if(NOT DEFINED CMAKE_CXX_EXTENSIONS)
    # Kokkos refuses GNU extensions and would force the cache variable with a warning.
    set(CMAKE_CXX_EXTENSIONS OFF)
  endif()
  find_package(Kokkos REQUIRED QUIET)
  # Debian's KokkosKernels has no version file: find_package(KokkosKernels <version>) fails.
  find_package(KokkosKernels REQUIRED QUIET)

  if(NOT TARGET schatten::kokkos_deps)
    add_library(schatten::kokkos_deps INTERFACE IMPORTED)
    if(TARGET Kokkos::kokkoskernels)
      set_property(TARGET schatten::kokkos_deps PROPERTY
        INTERFACE_LINK_LIBRARIES Kokkos::kokkoskernels Kokkos::kokkos)
      set(SCHATTEN_KOKKOS_FLAVOUR "Kokkos ${Kokkos_VERSION} (installed targets)")
      # CUDA: the vendor layer calls cuBLAS (GEMM, TRSM, SYRK) and cuSOLVER's Cholesky itself,
      # with a handle per stream (vendor.hpp), so it links both. Kokkos' own config has already
      # found the CUDA toolkit.
      if(Kokkos_ENABLE_CUDA)
        find_package(CUDAToolkit REQUIRED)
        set_property(TARGET schatten::kokkos_deps APPEND PROPERTY INTERFACE_LINK_LIBRARIES CUDA::cublas
                                                                                           CUDA::cusolver)
      endif()
    else()
      set(_schatten_kk_libs)
      foreach(_lib IN LISTS KokkosKernels_LIBRARIES)
        find_library(SCHATTEN_LIB_${_lib} NAMES ${_lib} HINTS ${KokkosKernels_LIBRARY_DIRS}
                     NO_DEFAULT_PATH)
        if(NOT SCHATTEN_LIB_${_lib})
          find_library(SCHATTEN_LIB_${_lib} NAMES ${_lib})
        endif()
        if(NOT SCHATTEN_LIB_${_lib})
          message(FATAL_ERROR "schatten: Kokkos Kernels library '${_lib}' not found "
                              "(looked in ${KokkosKernels_LIBRARY_DIRS})")
        endif()
        list(APPEND _schatten_kk_libs ${SCHATTEN_LIB_${_lib}})
      endforeach()
      get_filename_component(_schatten_kk_inc "${KokkosKernels_INCLUDE_DIRS}" ABSOLUTE)
      set_property(TARGET schatten::kokkos_deps PROPERTY
        INTERFACE_INCLUDE_DIRECTORIES "${_schatten_kk_inc}")
      set_property(TARGET schatten::kokkos_deps PROPERTY
        INTERFACE_LINK_LIBRARIES "${_schatten_kk_libs};${KokkosKernels_TPL_LIBRARIES};${CMAKE_DL_LIBS}")
      set(SCHATTEN_KOKKOS_FLAVOUR "Kokkos ${Kokkos_VERSION} (Trilinos package variables)")
    endif()
  endif()
endmacro()
