// Lets one inline function serve both the CPU and the CUDA path of the core:
// compiled by nvcc it is callable from host and device code, by a plain C++ compiler it is ordinary inline code.
#ifndef CAFFE_MINING_COMMON_HOST_DEVICE_HPP_
#define CAFFE_MINING_COMMON_HOST_DEVICE_HPP_

#if defined(__CUDACC__)
#define CM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define CM_HOST_DEVICE inline
#endif

// The same for element-wise templates that the CPU's vector lanes also call: always inlined, so that a caller
// compiled for a wider target (AVX2 lanes) compiles their body for it too.
#if defined(__CUDACC__)
#define CM_HOST_DEVICE_LANES __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define CM_HOST_DEVICE_LANES inline __attribute__((always_inline))
#else
#define CM_HOST_DEVICE_LANES inline
#endif

#endif  // CAFFE_MINING_COMMON_HOST_DEVICE_HPP_
