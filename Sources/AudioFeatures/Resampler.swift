import Foundation

/// Down-mixing and sample-rate conversion for the mel front end (the dub track arrives at
/// 44.1 or 48 kHz, stereo; the features need 16 kHz mono).
///
/// Band-limited polyphase resampling: a Kaiser-windowed sinc (β = 8.6, 16 zero crossings per
/// side of the low-pass) with its cut-off at 0.95 × the lower of the two Nyquist frequencies.
package enum AudioResampler {
    /// Mean of the channels of interleaved samples, resampled to 16 kHz.
    package static func mono16k(interleaved: [Float], channels: Int, sampleRate: Int) -> [Float] {
        resample(downmix(interleaved, channels: channels), from: sampleRate, to: MelSpectrogram.sampleRate)
    }

    /// Mean of the channels of interleaved samples.
    package static func downmix(_ x: [Float], channels: Int) -> [Float] {
        precondition(channels >= 1)
        guard channels > 1 else { return x }
        let n = x.count / channels
        var out = [Float](repeating: 0, count: n)
        x.withUnsafeBufferPointer { src in
            for i in 0..<n {
                var s: Float = 0
                for c in 0..<channels { s += src[i * channels + c] }
                out[i] = s / Float(channels)
            }
        }
        return out
    }

    /// `x` at `from` Hz resampled to `to` Hz: `floor(count · to / from)` samples, output sample n
    /// taken at input time `n · from / to` (the first samples of both coincide).
    package static func resample(_ x: [Float], from: Int, to: Int) -> [Float] {
        precondition(from > 0 && to > 0)
        if from == to || x.isEmpty { return x }
        let g = gcd(from, to)
        let up = to / g, down = from / g
        let outCount = x.count * up / down
        let cutoff = 0.95 * min(1.0, Double(up) / Double(down))   // of the input Nyquist
        let zeroCrossings = 16
        let half = Int((Double(zeroCrossings) / cutoff).rounded(.up))
        let taps = 2 * half
        // kernel(phase p, tap k) weighs input sample i - half + 1 + k for output at i + p/up.
        func kernel(_ p: Int) -> [Float] {
            (0..<taps).map { k in
                let t = Double(k - half + 1) - Double(p) / Double(up)
                let w = kaiser(t / Double(half), beta: 8.6)
                let a = Double.pi * cutoff * t
                return Float(cutoff * (abs(a) < 1e-12 ? 1 : sin(a) / a) * w)
            }
        }
        let table: [[Float]]? = up <= 4096 ? (0..<up).map(kernel) : nil
        var out = [Float](repeating: 0, count: outCount)
        x.withUnsafeBufferPointer { src in
            let n = src.count
            for o in 0..<outCount {
                let pos = o * down
                let i = pos / up, p = pos % up
                let h = table?[p] ?? kernel(p)
                var acc: Float = 0
                let start = i - half + 1
                if start >= 0 && start + taps <= n {
                    for k in 0..<taps { acc += src[start + k] * h[k] }
                } else {
                    for k in 0..<taps where start + k >= 0 && start + k < n { acc += src[start + k] * h[k] }
                }
                out[o] = acc
            }
        }
        return out
    }

    static func gcd(_ a: Int, _ b: Int) -> Int { b == 0 ? a : gcd(b, a % b) }

    /// Kaiser window at x ∈ [−1, 1] (0 outside).
    static func kaiser(_ x: Double, beta: Double) -> Double {
        guard abs(x) <= 1 else { return 0 }
        return besselI0(beta * (1 - x * x).squareRoot()) / besselI0(beta)
    }

    static func besselI0(_ x: Double) -> Double {
        var sum = 1.0, term = 1.0, k = 1.0
        while term > 1e-12 * sum {
            term *= (x / (2 * k)) * (x / (2 * k))
            sum += term
            k += 1
        }
        return sum
    }
}
