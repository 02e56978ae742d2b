"""Voxel-wise Taichi kernels of the defect detectors (every core, or the GPU).

* ``sheet``: the oriented sheet filter of :func:`recon.plane_filter.plane_filter`, applied to
  an rfftn half-spectrum (the formula is written once, here).
* ``keep_max`` (``keep_max_i8``): running maximum and its argument (int16, int8) over the
  filter's normals.
* ``sheetness``: :func:`recon.defects.sheetness` from the six Hessian components (closed-form
  eigenvalues of symmetric 3x3 matrices, Smith 1961).

No ``from __future__ import annotations``: Taichi reads kernel annotations at runtime.
"""

from typing import Any

from twin.runtime import kernels_once, releasing


@kernels_once
def get_kernels() -> dict[str, Any]:
    """The kernels, defined on first use."""
    import taichi as ti

    @releasing
    @ti.kernel
    def sheet(X: ti.types.ndarray(dtype=ti.f32, ndim=4), Y: ti.types.ndarray(dtype=ti.f32, ndim=4),
              nz: ti.i32, ny: ti.i32, nx: ti.i32, n0: ti.f32, n1: ti.f32, n2: ti.f32,
              sn2: ti.f32, sp2: ti.f32):
        """Y = X H with H(k) = -sn2 (k.n)^2 exp(-(sn2 (k.n)^2 + sp2 (|k|^2 - (k.n)^2)) / 2):
        d^2/dn^2 is -(k.n)^2 in Fourier space, sn2 normalises the scale. X, Y: the rfftn
        half-spectrum (nz, ny, nx // 2 + 1) as (real, imaginary) float32 pairs."""
        two_pi = 6.283185307179586
        for i, j, l in ti.ndrange(X.shape[0], X.shape[1], X.shape[2]):
            fi = i if i < (nz + 1) // 2 else i - nz     # numpy.fft.fftfreq order
            fj = j if j < (ny + 1) // 2 else j - ny
            kz = two_pi * ti.cast(fi, ti.f32) / nz
            ky = two_pi * ti.cast(fj, ti.f32) / ny
            kx = two_pi * ti.cast(l, ti.f32) / nx       # numpy.fft.rfftfreq
            kn = kz * n0 + ky * n1 + kx * n2
            kn2 = kn * kn
            k2 = kz * kz + ky * ky + kx * kx
            h = -sn2 * kn2 * ti.exp(-0.5 * (sn2 * kn2 + sp2 * (k2 - kn2)))
            Y[i, j, l, 0] = X[i, j, l, 0] * h
            Y[i, j, l, 1] = X[i, j, l, 1] * h

    def keep_max_of(index_type):
        @releasing
        @ti.kernel
        def keep_max(r: ti.types.ndarray(dtype=ti.f32, ndim=3), resp: ti.types.ndarray(dtype=ti.f32, ndim=3),
                     best: ti.types.ndarray(dtype=index_type, ndim=3), index: ti.i32):
            for z, y, x in r:
                if r[z, y, x] > resp[z, y, x]:
                    resp[z, y, x] = r[z, y, x]
                    best[z, y, x] = ti.cast(index, index_type)
        return keep_max

    @ti.func
    def eig3(a11: ti.f64, a22: ti.f64, a33: ti.f64, a12: ti.f64, a13: ti.f64, a23: ti.f64):
        """Eigenvalues e1 >= e2 >= e3 of a symmetric 3x3 matrix (Smith 1961)."""
        q = (a11 + a22 + a33) / 3.0
        p1 = a12 * a12 + a13 * a13 + a23 * a23
        b11, b22, b33 = a11 - q, a22 - q, a33 - q
        p = ti.sqrt((b11 * b11 + b22 * b22 + b33 * b33 + 2.0 * p1) / 6.0)
        safe = p if p > 0 else 1.0
        b11, b22, b33 = b11 / safe, b22 / safe, b33 / safe
        b12, b13, b23 = a12 / safe, a13 / safe, a23 / safe
        det = (b11 * (b22 * b33 - b23 * b23) - b12 * (b12 * b33 - b23 * b13)
               + b13 * (b12 * b23 - b22 * b13))
        phi = ti.acos(ti.min(ti.max(det / 2.0, -1.0), 1.0)) / 3.0
        e1 = q + 2.0 * p * ti.cos(phi)
        # 2 pi / 3 from an exact literal: float literals in kernels are float32 here
        e3 = q + 2.0 * p * ti.cos(phi + ti.acos(ti.f64(-0.5)))
        e2 = 3.0 * q - e1 - e3
        return e1, e2, e3

    @releasing
    @ti.kernel
    def eigvals(a11: ti.types.ndarray(dtype=ti.f64, ndim=1), a22: ti.types.ndarray(dtype=ti.f64, ndim=1),
                a33: ti.types.ndarray(dtype=ti.f64, ndim=1), a12: ti.types.ndarray(dtype=ti.f64, ndim=1),
                a13: ti.types.ndarray(dtype=ti.f64, ndim=1), a23: ti.types.ndarray(dtype=ti.f64, ndim=1),
                out: ti.types.ndarray(dtype=ti.f64, ndim=2)):
        for i in a11:
            e1, e2, e3 = eig3(a11[i], a22[i], a33[i], a12[i], a13[i], a23[i])
            out[i, 0], out[i, 1], out[i, 2] = e1, e2, e3

    @releasing
    @ti.kernel
    def sheetness(hzz: ti.types.ndarray(dtype=ti.f32, ndim=1), hyy: ti.types.ndarray(dtype=ti.f32, ndim=1),
                  hxx: ti.types.ndarray(dtype=ti.f32, ndim=1), hzy: ti.types.ndarray(dtype=ti.f32, ndim=1),
                  hzx: ti.types.ndarray(dtype=ti.f32, ndim=1), hyx: ti.types.ndarray(dtype=ti.f32, ndim=1),
                  sigma2: ti.f64, out: ti.types.ndarray(dtype=ti.f32, ndim=1)):
        """S = sigma^2 (l1 - |l2| - |l3|) of the Hessian at each voxel (float64 inside)."""
        for i in hzz:
            l1, l2, l3 = eig3(ti.cast(hzz[i], ti.f64), ti.cast(hyy[i], ti.f64), ti.cast(hxx[i], ti.f64),
                              ti.cast(hzy[i], ti.f64), ti.cast(hzx[i], ti.f64), ti.cast(hyx[i], ti.f64))
            out[i] = ti.cast((l1 - ti.abs(l2) - ti.abs(l3)) * sigma2, ti.f32)

    return {"sheet": sheet, "keep_max": keep_max_of(ti.i16), "keep_max_i8": keep_max_of(ti.i8),
            "eigvals": eigvals, "sheetness": sheetness}
