/// Vectorised transcendental functions for the engine's fused element-wise passes.
enum FastMath {
    typealias V8 = SIMD8<Float>

    /// `exp(x)` on 8 lanes (Cephes polynomial, ~1 ulp on the float range; inputs clamped to
    /// ±88). Rounding uses the 1.5·2²³ trick so it needs no SSE4.1 instruction.
    @inline(__always)
    static func exp(_ x0: V8) -> V8 {
        let lo = V8(repeating: -87.3), hi = V8(repeating: 88.3)
        let x = x0.replacing(with: lo, where: x0 .< lo).replacing(with: hi, where: x0 .> hi)
        let magic = V8(repeating: 12_582_912)
        let t = x * 1.442_695_04 + magic
        let n = t - magic
        let r = x - n * 0.693_359_375 + n * 2.121_944_4e-4
        var p = V8(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_950_7e-3
        p = p * r + 8.333_451_907_3e-3
        p = p * r + 4.166_579_589_4e-2
        p = p * r + 1.666_666_545_9e-1
        p = p * r + 5.000_000_120_1e-1
        p = p * (r * r) + r + 1
        // t's low mantissa bits hold n as an integer: 2^n is (n + 127) << 23
        let ni = unsafeBitCast(t, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
        return p * unsafeBitCast((ni &+ 127) &<< 23, to: V8.self)
    }

    /// `x · sigmoid(x)` on 8 lanes.
    @inline(__always)
    static func silu(_ x: V8) -> V8 { x / (1 + exp(-x)) }

    /// Scalar `x · sigmoid(x)` through the same polynomial.
    @inline(__always)
    static func silu(_ x: Float) -> Float { silu(V8(repeating: x))[0] }
}

extension FastMath {
    /// `erf(x)` on 8 lanes (Abramowitz–Stegun 7.1.26, absolute error < 1.5e-7).
    @inline(__always)
    static func erf(_ x: V8) -> V8 {
        let ax = x.replacing(with: -x, where: x .< 0)
        let t = 1 / (1 + 0.327_591_1 * ax)
        var p = V8(repeating: 1.061_405_429)
        p = p * t - 1.453_152_027
        p = p * t + 1.421_413_741
        p = p * t - 0.284_496_736
        p = p * t + 0.254_829_592
        let y = 1 - p * t * exp(-(ax * ax))
        return y.replacing(with: -y, where: x .< 0)
    }

    /// Applies `f` to `count` floats in place, 8 at a time (scalar lanes for the tail).
    @inline(__always)
    static func map(_ p: UnsafeMutablePointer<Float>, _ count: Int, _ f: (V8) -> V8) {
        var i = 0
        while i + 8 <= count {
            let v = UnsafeRawPointer(p + i).loadUnaligned(as: V8.self)
            UnsafeMutableRawPointer(p + i).storeBytes(of: f(v), as: V8.self)
            i += 8
        }
        if i < count {
            var v = V8()
            for l in 0..<(count - i) { v[l] = p[i + l] }
            let r = f(v)
            for l in 0..<(count - i) { p[i + l] = r[l] }
        }
    }
}
