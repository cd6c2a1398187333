import Foundation

/// A complex FFT of fixed length whose prime factors are 2, 3, 4 and 5 (mixed-radix Stockham
/// autosort, decimation in frequency, natural-order output), and a real-input FFT of even
/// length built on the half-length complex one.
///
/// `X[k] = Σ x[n]·e^(−2πi·nk/N)` (no scaling). Twiddles are precomputed in Double.
package struct ComplexFFT: Sendable {
    package let count: Int
    private let radices: [Int]
    /// Per stage: twiddles `W_n^(p·k)` for the stage's sub-length n, `p < n/radix`, `k < radix`.
    private let twiddles: [[Double]]

    /// - Precondition: `count` factors into 2, 3 and 5.
    package init(count: Int) {
        precondition(count >= 1, "FFT length must be positive")
        var n = count
        var r: [Int] = []
        for p in [4, 2, 3, 5] {
            while n % p == 0 {
                r.append(p)
                n /= p
            }
        }
        precondition(n == 1, "FFT length \(count) has a prime factor other than 2, 3 and 5")
        self.count = count
        self.radices = r
        var tw: [[Double]] = []
        var len = count
        for p in r {
            let m = len / p
            var t = [Double](repeating: 0, count: 2 * m * p)
            for q in 0..<m {
                for k in 0..<p {
                    let a = -2 * Double.pi * Double(q * k) / Double(len)
                    t[2 * (q * p + k)] = cos(a)
                    t[2 * (q * p + k) + 1] = sin(a)
                }
            }
            tw.append(t)
            len = m
        }
        self.twiddles = tw
    }

    /// Transforms interleaved complex data (`re, im` pairs, `2·count` values) in place.
    package func transform(_ data: inout [Double]) {
        precondition(data.count == 2 * count)
        var work = [Double](repeating: 0, count: 2 * count)
        var inX = true
        var n = count, s = 1
        for (stage, p) in radices.enumerated() {
            let m = n / p
            if inX {
                butterflies(&data, &work, n: n, s: s, p: p, m: m, tw: twiddles[stage])
            } else {
                butterflies(&work, &data, n: n, s: s, p: p, m: m, tw: twiddles[stage])
            }
            inX.toggle()
            n = m
            s *= p
        }
        if !inX { data = work }
    }

    /// One Stockham stage: `y[q + s(p·j + k)] = W_n^(jk) · Σ_l x[q + s(j + l·m)]·W_p^(lk)`.
    private func butterflies(_ x: inout [Double], _ y: inout [Double], n: Int, s: Int, p: Int, m: Int, tw: [Double]) {
        x.withUnsafeBufferPointer { X in
            y.withUnsafeMutableBufferPointer { Y in
                tw.withUnsafeBufferPointer { T in
                    // W_p^(lk) for the small DFT.
                    var wr = [Double](repeating: 0, count: p * p), wi = [Double](repeating: 0, count: p * p)
                    for l in 0..<p {
                        for k in 0..<p {
                            let a = -2 * Double.pi * Double((l * k) % p) / Double(p)
                            wr[l * p + k] = cos(a)
                            wi[l * p + k] = sin(a)
                        }
                    }
                    var ar = [Double](repeating: 0, count: p), ai = [Double](repeating: 0, count: p)
                    for j in 0..<m {
                        for q in 0..<s {
                            for l in 0..<p {
                                let i = 2 * (q + s * (j + l * m))
                                ar[l] = X[i]
                                ai[l] = X[i + 1]
                            }
                            for k in 0..<p {
                                var sr = 0.0, si = 0.0
                                if p == 2 {
                                    sr = k == 0 ? ar[0] + ar[1] : ar[0] - ar[1]
                                    si = k == 0 ? ai[0] + ai[1] : ai[0] - ai[1]
                                } else {
                                    for l in 0..<p {
                                        let c = wr[l * p + k], d = wi[l * p + k]
                                        sr += ar[l] * c - ai[l] * d
                                        si += ar[l] * d + ai[l] * c
                                    }
                                }
                                let tr = T[2 * (j * p + k)], ti = T[2 * (j * p + k) + 1]
                                let o = 2 * (q + s * (p * j + k))
                                Y[o] = sr * tr - si * ti
                                Y[o + 1] = sr * ti + si * tr
                            }
                        }
                    }
                }
            }
        }
    }
}

/// FFT of real input of even length N through a complex FFT of length N/2; returns the
/// N/2 + 1 non-negative-frequency bins.
package struct RealFFT: Sendable {
    package let count: Int
    private let half: ComplexFFT
    private let cosTable: [Double]
    private let sinTable: [Double]

    package init(count: Int) {
        precondition(count % 2 == 0, "RealFFT needs an even length")
        self.count = count
        half = ComplexFFT(count: count / 2)
        cosTable = (0...(count / 2)).map { cos(-2 * Double.pi * Double($0) / Double(count)) }
        sinTable = (0...(count / 2)).map { sin(-2 * Double.pi * Double($0) / Double(count)) }
    }

    /// Magnitudes `|X[k]|`, k = 0 … N/2, of real input `x` (length N).
    package func magnitudes(_ x: UnsafeBufferPointer<Double>, into out: inout [Double]) {
        let h = count / 2
        // Pack even samples as real parts, odd as imaginary parts.
        var z = [Double](unsafeUninitializedCapacity: count) { b, n in
            for i in 0..<count { b[i] = x[i] }
            n = count
        }
        half.transform(&z)
        if out.count != h + 1 { out = [Double](repeating: 0, count: h + 1) }
        for k in 0...h {
            let k1 = k % h, k2 = (h - k) % h
            let zr = z[2 * k1], zi = z[2 * k1 + 1]
            let cr = z[2 * k2], ci = -z[2 * k2 + 1]          // conj(Z[h-k])
            let er = 0.5 * (zr + cr), ei = 0.5 * (zi + ci)    // even part
            let dr = 0.5 * (zr - cr), di = 0.5 * (zi - ci)    // odd part times i
            // X[k] = E + W^k · (D / i), D / i = (di, -dr)
            let wr = cosTable[k], wi = sinTable[k]
            let or = di * wr + dr * wi, oi = di * wi - dr * wr
            let xr = er + or, xi = ei + oi
            out[k] = (xr * xr + xi * xi).squareRoot()
        }
    }
}
