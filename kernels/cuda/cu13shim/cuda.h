/*
 * cuda.h shim: gorgonia.org/cu v0.9.6 against CUDA 13's driver API.
 *
 * CUDA 13.0 made the _v2/_v4 forms of five driver calls the default, with new
 * parameters, so gorgonia.org/cu v0.9.6 (written for CUDA 10-12) no longer
 * compiles (gcc: "too few arguments to function 'cuCtxCreate_v4'" and the like).
 * Putting this directory first on the include path
 *
 *     CGO_CFLAGS="-I$PWD/kernels/cuda/cu13shim $CGO_CFLAGS"
 *
 * makes every `#include <cuda.h>` land here: it includes the real header and maps
 * the old signatures onto the new calls. Below CUDA 13 it only includes the real
 * header. The library itself is unchanged (go.mod still points at v0.9.6).
 *
 *   cuCtxCreate(ctx, flags, dev)            -> cuCtxCreate_v4(ctx, NULL, flags, dev)
 *   cuMemAdvise(p, n, advice, dev)          -> cuMemAdvise_v2(p, n, advice, location of dev)
 *   cuMemPrefetchAsync(p, n, dev, stream)   -> cuMemPrefetchAsync_v2(p, n, location of dev, 0, stream)
 *   cuGraphAddDependencies(g, from, to, n)  -> cuGraphAddDependencies_v2(g, from, to, NULL, n)
 *   cuGraphGetEdges(g, from, to, n)         -> cuGraphGetEdges_v2(g, from, to, NULL, n)
 */
#ifndef TROUPE_CU13SHIM_CUDA_H
#define TROUPE_CU13SHIM_CUDA_H

#include_next <cuda.h>

#if CUDA_VERSION >= 13000
#include <stddef.h>

/* troupeMemLocation is where a CUdevice (or CU_DEVICE_CPU) lives, as a CUmemLocation. */
static inline CUmemLocation troupeMemLocation(CUdevice dev) {
	CUmemLocation loc;
	if (dev == CU_DEVICE_CPU) {
		loc.type = CU_MEM_LOCATION_TYPE_HOST;
		loc.id = 0;
	} else {
		loc.type = CU_MEM_LOCATION_TYPE_DEVICE;
		loc.id = (int)dev;
	}
	return loc;
}

static inline CUresult troupe_cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice dev) {
	return cuCtxCreate_v4(pctx, NULL, flags, dev);
}

static inline CUresult troupe_cuMemAdvise(CUdeviceptr devPtr, size_t count, CUmem_advise advice, CUdevice dev) {
	return cuMemAdvise_v2(devPtr, count, advice, troupeMemLocation(dev));
}

static inline CUresult troupe_cuMemPrefetchAsync(CUdeviceptr devPtr, size_t count, CUdevice dst, CUstream stream) {
	return cuMemPrefetchAsync_v2(devPtr, count, troupeMemLocation(dst), 0, stream);
}

static inline CUresult troupe_cuGraphAddDependencies(CUgraph g, const CUgraphNode *from, const CUgraphNode *to, size_t n) {
	return cuGraphAddDependencies_v2(g, from, to, NULL, n);
}

static inline CUresult troupe_cuGraphGetEdges(CUgraph g, CUgraphNode *from, CUgraphNode *to, size_t *n) {
	return cuGraphGetEdges_v2(g, from, to, NULL, n);
}

#undef cuCtxCreate
#define cuCtxCreate troupe_cuCtxCreate
#undef cuMemAdvise
#define cuMemAdvise troupe_cuMemAdvise
#undef cuMemPrefetchAsync
#define cuMemPrefetchAsync troupe_cuMemPrefetchAsync
#undef cuGraphAddDependencies
#define cuGraphAddDependencies troupe_cuGraphAddDependencies
#undef cuGraphGetEdges
#define cuGraphGetEdges troupe_cuGraphGetEdges
#endif /* CUDA_VERSION >= 13000 */

#endif /* TROUPE_CU13SHIM_CUDA_H */
