/// The engine's hand-vectorised inner loops (element-wise activations, softmax rows, GroupNorm
/// passes, the Winograd transforms), with no dependency on the rest of the engine.
///
/// This file is compiled twice: into `EngineKernels` for the baseline x86-64 / arm64 target,
/// and (through a symbolic link) into `EngineKernelsAVX2` with `-target-cpu haswell`, where the
/// same `SIMD8<Float>` code becomes single 256-bit AVX2 instructions instead of pairs of SSE
/// ones. `Engine.KernelSet` picks one at run time from the CPU's features. Both compile the same
/// operations in the same order and neither contracts multiply-adds, so their results are
/// identical.
///
/// Nothing here is `@inlinable`: a kernel must be compiled with its own module's target flags.
package enum Kernels {
    typealias V8 = SIMD8<Float>
    @inline(__always) static func ld(_ q: UnsafePointer<Float>) -> V8 { UnsafeRawPointer(q).loadUnaligned(as: V8.self) }
    @inline(__always) static func ld(_ q: UnsafeMutablePointer<Float>) -> V8 { UnsafeRawPointer(q).loadUnaligned(as: V8.self) }
    @inline(__always) static func st(_ q: UnsafeMutablePointer<Float>, _ v: V8) { UnsafeMutableRawPointer(q).storeBytes(of: v, as: V8.self) }

    /// Winograd F(4×4, 3×3) input transform `Bᵀ d` of one line of six values (used down the
    /// columns, then along the rows).
    @inline(__always) static func bt(_ d0: V8, _ d1: V8, _ d2: V8, _ d3: V8, _ d4: V8, _ d5: V8) -> (V8, V8, V8, V8, V8, V8) {
        (4 * d0 - 5 * d2 + d4, d3 + d4 - 4 * (d1 + d2), 4 * (d1 - d2) - d3 + d4,
         2 * (d3 - d1) - d2 + d4, 2 * (d1 - d3) - d2 + d4, 4 * d1 - 5 * d3 + d5)
    }

    /// Winograd F(4×4, 3×3) output transform `Aᵀ m` of one line of six values.
    @inline(__always) static func at(_ a: V8, _ b: V8, _ c: V8, _ d: V8, _ e: V8, _ f: V8) -> (V8, V8, V8, V8) {
        let bp = b + c, bm = b - c, dp = d + e, dm = d - e
        return (a + bp + dp, bm + 2 * dm, bp + 4 * dp, bm + 8 * dm + f)
    }

    /// `x · sigmoid(x)` on `count` floats in place.
    package static func silu(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        FastMath.map(p, count) { FastMath.silu($0) }
    }

    /// GELU, `0.5 x (1 + erf(x / √2))`, on `count` floats in place.
    package static func gelu(_ p: UnsafeMutablePointer<Float>, _ count: Int) {
        FastMath.map(p, count) { 0.5 * $0 * (1 + FastMath.erf($0 * 0.707_106_781_186_547_52)) }
    }

    /// Softmax of one row of `cols` floats in place.
    package static func softmaxRow(_ row: UnsafeMutablePointer<Float>, _ cols: Int) {
        let cv = cols & ~7
        var mv = V8(repeating: -Float.infinity)
        var i = 0
        while i < cv {
            let x = ld(row + i)
            mv.replace(with: x, where: x .> mv)
            i += 8
        }
        var m = mv.max()
        while i < cols { m = max(m, row[i]); i += 1 }
        let mb = V8(repeating: m)
        var acc = V8()
        i = 0
        while i < cv {
            let e = FastMath.exp(ld(row + i) - mb)
            st(row + i, e)
            acc += e
            i += 8
        }
        if i < cols { FastMath.map(row + i, cols - i) { FastMath.exp($0 - mb) } }
        var s = acc.sum()
        while i < cols { s += row[i]; i += 1 }
        let inv = V8(repeating: 1 / s)
        i = 0
        while i < cv { st(row + i, ld(row + i) * inv); i += 8 }
        while i < cols { row[i] *= inv[0]; i += 1 }
    }

    /// Mean and biased variance of `count` floats in one pass, shifted by the first value so
    /// that `E[(x-k)²] - E[x-k]²` does not cancel; float lanes are flushed to doubles every
    /// 1024 values.
    package static func moments(_ base: UnsafePointer<Float>, _ count: Int) -> (mean: Double, variance: Double) {
        let n = count
        let k = base[0], kv = V8(repeating: k)
        let nv = n & ~7
        var s = 0.0, ss = 0.0, i = 0
        while i < nv {
            let end = min(nv, i + 1024)
            var a1 = V8(), a2 = V8()
            while i < end { let d = ld(base + i) - kv; a1 += d; a2 += d * d; i += 8 }
            s += Double(a1.sum()); ss += Double(a2.sum())
        }
        while i < n { let d = Double(base[i] - k); s += d; ss += d * d; i += 1 }
        let ms = s / Double(n)
        return (Double(k) + ms, max(0, ss / Double(n) - ms * ms))
    }

    /// `dst[i] = act(src[i] · a + b)` for `count` floats, `act` SiLU or the identity.
    package static func affine(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int,
                              scale a: Float, shift b: Float, silu: Bool) {
        let av = V8(repeating: a), bv = V8(repeating: b)
        let pv = count & ~7
        var j = 0
        if silu {
            while j < pv { st(dst + j, FastMath.silu(ld(src + j) * av + bv)); j += 8 }
            while j < count { dst[j] = FastMath.silu(src[j] * a + b); j += 1 }
        } else {
            while j < pv { st(dst + j, ld(src + j) * av + bv); j += 8 }
            while j < count { dst[j] = src[j] * a + b; j += 1 }
        }
    }

    /// Winograd F(4×4, 3×3) input transform of tile rows `ty0 ..< ty1` of every channel:
    /// `V[ξ][c][tile] = (Bᵀ d B)[ξ]` for the 6×6 input tile `d` of each tile, written at
    /// `v + (ξ · cs + c) · ntS + (ty - ty0) · tw + t`, where `cs` (`channelStride`, at least
    /// `cin`) is the channel count of the whole `V` when this call transforms a slice of it.
    ///
    /// The input is `cin` planes of `srcH × srcW` at `x`, read as its nearest 2× upsampling when
    /// `upsample` is set, zero-padded by `padding` on every side (`h × w` is the virtual input's
    /// size). With `scale`/`shift`, each input value is first mapped to `act(x · scale[c] +
    /// shift[c])` (`act` SiLU when `silu`), the padding staying zero: the normalised map is then
    /// never written. `scratch` holds `24 · ph` (rows split by phase) + `24 · ph` (vertical
    /// results) + `rowBuffer` floats, where `ph = (tw + 8) & ~7`, `twV = (tw + 7) & ~7` and
    /// `rowBuffer` is `(4 · (ty1 - ty0) + 6) · srcW` when normalising.
    package static func winogradInput(
        x: UnsafePointer<Float>, channels cin: Int, channelStride cs: Int, srcH: Int, srcW: Int, h: Int, w: Int, padding p: Int, upsample up: Bool,
        scale: UnsafePointer<Float>?, shift: UnsafePointer<Float>?, silu: Bool,
        tileRows ty0: Int, _ ty1: Int, tilesPerRow tw: Int, ph: Int, twV: Int, ntS: Int,
        v: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>
    ) {
        let rows = scratch, vert = rows + 24 * ph, normRows = vert + 24 * ph
        let srcPlane = srcH * srcW
        // source rows the block reads (of the stored, not upsampled, map)
        let yFirst = max(0, ty0 * 4 - p), yLast = min(h - 1, (ty1 - 1) * 4 - p + 5)
        let sFirst = up ? yFirst >> 1 : yFirst, sLast = up ? yLast >> 1 : yLast
        for c in 0..<cin {
            var plane = x + c * srcPlane
            var planeRow0 = 0
            if let scale, let shift, sLast >= sFirst {
                // the block's source rows of this channel, normalised once into a small buffer
                let n = (sLast - sFirst + 1) * srcW
                affine(plane + sFirst * srcW, normRows, n, scale: scale[c], shift: shift[c], silu: silu)
                plane = UnsafePointer(normRows)
                planeRow0 = sFirst
            }
            for ty in ty0..<ty1 {
                let y0 = ty * 4 - p
                // rows split by phase: rows[(k * 4 + mm) * ph + t] = in[y0 + k][4t + mm - p]
                for k in 0..<6 {
                    let dst = rows + k * 4 * ph
                    let yy = y0 + k
                    if yy < 0 || yy >= h {
                        dst.initialize(repeating: 0, count: 4 * ph)
                        continue
                    }
                    let src = plane + ((up ? yy >> 1 : yy) - planeRow0) * srcW
                    for mm in 0..<4 {
                        let d = dst + mm * ph
                        // t with 0 <= 4t + mm - p < w
                        let lo = max(0, (p - mm + 3) / 4), lim = w - 1 - mm + p
                        let hi = lim < 0 ? lo : min(ph, max(lo, lim / 4 + 1))
                        var t = 0
                        while t < lo { d[t] = 0; t += 1 }
                        if up {
                            // (4t + mm - p) / 2 = 2t + ⌊(mm - p) / 2⌋
                            let s0 = src + ((mm - p) >> 1)
                            while t < hi { d[t] = s0[2 * t]; t += 1 }
                        } else {
                            let s0 = src + (mm - p)
                            while t < hi { d[t] = s0[4 * t]; t += 1 }
                        }
                        while t < ph { d[t] = 0; t += 1 }
                    }
                }
                // vertical Bᵀ on all phases at once
                let n = 4 * ph
                var i = 0
                while i < n {
                    let y = bt(ld(rows + i), ld(rows + n + i), ld(rows + 2 * n + i),
                               ld(rows + 3 * n + i), ld(rows + 4 * n + i), ld(rows + 5 * n + i))
                    st(vert + i, y.0)
                    st(vert + n + i, y.1)
                    st(vert + 2 * n + i, y.2)
                    st(vert + 3 * n + i, y.3)
                    st(vert + 4 * n + i, y.4)
                    st(vert + 5 * n + i, y.5)
                    i += 8
                }
                // horizontal B: tile t reads phases 0..3 at t and phases 0, 1 at t + 1
                let tbase = (ty - ty0) * tw
                let s = cs * ntS
                for r in 0..<6 {
                    let a0 = vert + r * n, a1 = a0 + ph, a2 = a0 + 2 * ph, a3 = a0 + 3 * ph
                    let dst = v + (r * 6 * cs + c) * ntS + tbase
                    var t = 0
                    while t < twV {
                        let y = bt(ld(a0 + t), ld(a1 + t), ld(a2 + t), ld(a3 + t), ld(a0 + t + 1), ld(a1 + t + 1))
                        st(dst + t, y.0)
                        st(dst + s + t, y.1)
                        st(dst + 2 * s + t, y.2)
                        st(dst + 3 * s + t, y.3)
                        st(dst + 4 * s + t, y.4)
                        st(dst + 5 * s + t, y.5)
                        t += 8
                    }
                }
            }
        }
    }

    /// Winograd F(4×4, 3×3) output transform of tile rows `ty0 ..< ty1`: `Y = Aᵀ M A + bias`
    /// (+ `residual`, `[cout, oh, ow]`), written into `out` (`[cout, oh, ow]`), from the products
    /// `M[ξ][c][tile]` at `m + (ξ · cs + c) · ntS + (ty - ty0) · tw + t` (`cs`, `channelStride`, is
    /// the channel count of the whole `M` when this call writes a slice of the output). `scratch` holds
    /// `24 · ph + 16 · ph` floats.
    package static func winogradOutput(
        m: UnsafePointer<Float>, channels cout: Int, channelStride cs: Int, bias: UnsafePointer<Float>?, residual rd: UnsafePointer<Float>?,
        out od: UnsafeMutablePointer<Float>, oh: Int, ow: Int,
        tileRows ty0: Int, _ ty1: Int, tilesPerRow tw: Int, ph: Int, twV: Int, ntS: Int,
        scratch: UnsafeMutablePointer<Float>
    ) {
        let vert = scratch, outp = vert + 24 * ph
        let s = cs * ntS
        for c in 0..<cout {
            let bv = V8(repeating: bias?[c] ?? 0)
            let plane = od + c * oh * ow
            for ty in ty0..<ty1 {
                let mrow = m + c * ntS + (ty - ty0) * tw
                // horizontal Aᵀ over the 6 columns of each row: hz[(r * 4 + j) * ph + t]
                for r in 0..<6 {
                    let m0 = mrow + r * 6 * s
                    let h0 = vert + r * 4 * ph
                    var t = 0
                    while t < twV {
                        let y = at(ld(m0 + t), ld(m0 + s + t), ld(m0 + 2 * s + t),
                                   ld(m0 + 3 * s + t), ld(m0 + 4 * s + t), ld(m0 + 5 * s + t))
                        st(h0 + t, y.0)
                        st(h0 + ph + t, y.1)
                        st(h0 + 2 * ph + t, y.2)
                        st(h0 + 3 * ph + t, y.3)
                        t += 8
                    }
                }
                // vertical Aᵀ over the 6 rows: outp[(i * 4 + j) * ph + t]
                for j in 0..<4 {
                    let a0 = vert + j * ph
                    var t = 0
                    while t < twV {
                        let y = at(ld(a0 + t), ld(a0 + 4 * ph + t), ld(a0 + 8 * ph + t),
                                   ld(a0 + 12 * ph + t), ld(a0 + 16 * ph + t), ld(a0 + 20 * ph + t))
                        st(outp + j * ph + t, y.0 + bv)
                        st(outp + (4 + j) * ph + t, y.1 + bv)
                        st(outp + (8 + j) * ph + t, y.2 + bv)
                        st(outp + (12 + j) * ph + t, y.3 + bv)
                        t += 8
                    }
                }
                // interleave: output row 4ty + i, column 4t + j  <-  outp[(i * 4 + j) * ph + t]
                let full = ow / 4
                for i in 0..<min(4, oh - ty * 4) {
                    let row = plane + (ty * 4 + i) * ow
                    let o = outp + i * 4 * ph
                    if let rd {
                        let res = rd + c * oh * ow + (ty * 4 + i) * ow
                        for t in 0..<full {
                            row[4 * t] = o[t] + res[4 * t]; row[4 * t + 1] = o[ph + t] + res[4 * t + 1]
                            row[4 * t + 2] = o[2 * ph + t] + res[4 * t + 2]; row[4 * t + 3] = o[3 * ph + t] + res[4 * t + 3]
                        }
                        for xx in (full * 4)..<ow { row[xx] = o[(xx % 4) * ph + xx / 4] + res[xx] }
                    } else {
                        for t in 0..<full {
                            row[4 * t] = o[t]; row[4 * t + 1] = o[ph + t]
                            row[4 * t + 2] = o[2 * ph + t]; row[4 * t + 3] = o[3 * ph + t]
                        }
                        for xx in (full * 4)..<ow { row[xx] = o[(xx % 4) * ph + xx / 4] }
                    }
                }
            }
        }
    }
}

extension Kernels {
    /// Direct 3×3 stride-1 convolution of output rows `y0 ..< y1`, for maps with few output
    /// channels (the decoder's last convolution, to 3 RGB channels), where Winograd and im2col
    /// spend their time transforming or copying the input for a product only 3 rows tall.
    ///
    /// `x` is `cin` planes of `h × w`, `weight` is `[cout, cin, 3, 3]`, `out` (and `residual`)
    /// `[cout, oh, ow]` with `oh = h + 2p - 2`, `ow = w + 2p - 2`. The band's input rows are first
    /// copied, zero-padded, into `scratch` (``directScratch(channels:rows:ow:outChannels:)``
    /// floats), so no load needs a bounds check. Each output row is accumulated one input channel
    /// at a time: the 9 shifted input vectors of a position are loaded once and feed every output
    /// channel, whose partial sums (one row per output channel) stay in L1; the input is read
    /// front to back, as the hardware prefetcher likes it.
    package static func conv3x3Direct(
        x: UnsafePointer<Float>, channels cin: Int, h: Int, w: Int, padding p: Int,
        weight: UnsafePointer<Float>, outChannels cout: Int, bias: UnsafePointer<Float>?, residual rd: UnsafePointer<Float>?,
        out od: UnsafeMutablePointer<Float>, rows y0: Int, _ y1: Int, scratch: UnsafeMutablePointer<Float>
    ) {
        let oh = h + 2 * p - 2, ow = w + 2 * p - 2
        let owV = (ow + 7) & ~7, pw = owV + 8
        let bandRows = y1 - y0 + 2
        let acc = scratch + cin * bandRows * pw
        // padded band: buf[(ci * bandRows + r) * pw + p + x] = in[ci][y0 - p + r][x]
        for ci in 0..<cin {
            for r in 0..<bandRows {
                let dst = scratch + (ci * bandRows + r) * pw
                let iy = y0 - p + r
                dst.initialize(repeating: 0, count: pw)
                if iy >= 0 && iy < h { (dst + p).update(from: x + (ci * h + iy) * w, count: w) }
            }
        }
        for y in y0..<y1 {
            for co in 0..<cout { (acc + co * owV).initialize(repeating: bias?[co] ?? 0, count: owV) }
            for ci in 0..<cin {
                let r0 = UnsafePointer(scratch + (ci * bandRows + y - y0) * pw), r1 = r0 + pw, r2 = r1 + pw
                var s = 0
                while s < owV {
                    let i00 = ld(r0 + s), i01 = ld(r0 + s + 1), i02 = ld(r0 + s + 2)
                    let i10 = ld(r1 + s), i11 = ld(r1 + s + 1), i12 = ld(r1 + s + 2)
                    let i20 = ld(r2 + s), i21 = ld(r2 + s + 1), i22 = ld(r2 + s + 2)
                    for co in 0..<cout {
                        let k = weight + (co * cin + ci) * 9
                        let a = acc + co * owV + s
                        var t = ld(a)
                        t += V8(repeating: k[0]) * i00 + V8(repeating: k[1]) * i01 + V8(repeating: k[2]) * i02
                        t += V8(repeating: k[3]) * i10 + V8(repeating: k[4]) * i11 + V8(repeating: k[5]) * i12
                        t += V8(repeating: k[6]) * i20 + V8(repeating: k[7]) * i21 + V8(repeating: k[8]) * i22
                        st(a, t)
                    }
                    s += 8
                }
            }
            for co in 0..<cout {
                let src = acc + co * owV, dst = od + (co * oh + y) * ow
                if let rd {
                    let res = rd + (co * oh + y) * ow
                    for i in 0..<ow { dst[i] = src[i] + res[i] }
                } else {
                    dst.update(from: src, count: ow)
                }
            }
        }
    }

    /// Floats of scratch ``conv3x3Direct(x:channels:h:w:padding:weight:outChannels:bias:residual:out:rows:_:scratch:)``
    /// needs for a band of `rows` output rows.
    package static func directScratch(channels cin: Int, rows: Int, ow: Int, outChannels cout: Int) -> Int {
        let owV = (ow + 7) & ~7
        return cin * (rows + 2) * (owV + 8) + cout * owV
    }
}
