import Engine
import FaceAnalysis

/// Wall time spent in each step of the dub stage over one segment, and how many frames each
/// step saw (face tracking's steps count every decoded frame, context included, whether the
/// detector or following ran on it or not; the model only output frames with a face).
package struct DubTimings: Sendable, Hashable {
    /// The steps in pipeline order. `audio` is the mel front end (once per segment, shared out
    /// over the segment's frames); `audio-encoder` is the model's audio transformer.
    package static let steps = ["detect", "landmarks", "follow", "track", "warp", "audio", "encode", "quantize", "swap",
                               "audio-encoder", "lipsync", "decode", "blend"]

    package private(set) var seconds: [String: Double] = [:]
    package private(set) var frames: [String: Int] = [:]

    package init() {}

    /// Adds `seconds` spent on `frames` frames to `step`.
    package mutating func add(_ step: String, seconds s: Double, frames n: Int = 1) {
        seconds[step, default: 0] += s
        frames[step, default: 0] += n
    }

    /// Runs `body`, adding its wall time to `step`.
    @inline(__always)
    package mutating func measure<T>(_ step: String, frames n: Int = 1, _ body: () throws -> T) rethrows -> T {
        let t0 = Benchmark.now()
        defer { add(step, seconds: Benchmark.now() - t0, frames: n) }
        return try body()
    }

    /// Milliseconds per frame of each step that ran, in pipeline order.
    package var msPerFrame: [(step: String, msPerFrame: Double)] {
        Self.steps.compactMap { s in
            guard let t = seconds[s], let n = frames[s], n > 0 else { return nil }
            return (s, 1000 * t / Double(n))
        }
    }

    /// Sums two segments' timings.
    package static func + (a: DubTimings, b: DubTimings) -> DubTimings {
        var r = a
        for (k, v) in b.seconds { r.seconds[k, default: 0] += v }
        for (k, v) in b.frames { r.frames[k, default: 0] += v }
        return r
    }
}

/// Conversions between rgb24 face crops and the model's image tensors (`[3, S, S]`, channel
/// planes R, G, B, values `x / 127.5 − 1` in `[-1, 1]`, as in `tools/reference/swaptalk.py`).
package enum ImageTensor {
    /// Writes `crop` into `tensor` (shape `[3, S, S]` with `S = crop.size`).
    package static func fill(_ tensor: Tensor, from crop: FaceCrop) {
        let s = crop.size, n = s * s
        precondition(tensor.shape == [3, s, s], "ImageTensor.fill: tensor \(tensor.shape) for a \(s)×\(s) crop")
        let dst = tensor.data
        crop.pixels.withUnsafeBufferPointer { src in
            for i in 0..<n {
                dst[i] = Float(src[3 * i]) * (1 / 127.5) - 1
                dst[n + i] = Float(src[3 * i + 1]) * (1 / 127.5) - 1
                dst[2 * n + i] = Float(src[3 * i + 2]) * (1 / 127.5) - 1
            }
        }
    }

    /// The crop an image tensor `[3, S, S]` shows (values clamped to `[-1, 1]`, rounded).
    package static func crop(from tensor: Tensor) -> FaceCrop {
        precondition(tensor.shape.count == 3 && tensor.shape[0] == 3 && tensor.shape[1] == tensor.shape[2],
                     "ImageTensor.crop: expected [3, S, S], got \(tensor.shape)")
        let s = tensor.shape[1], n = s * s
        var out = [UInt8](repeating: 0, count: 3 * n)
        let src = tensor.data
        out.withUnsafeMutableBufferPointer { dst in
            for c in 0..<3 {
                for i in 0..<n {
                    let x = src[c * n + i]
                    let v = x.isNaN ? 127.5 : (min(1, max(-1, x)) + 1) * 127.5
                    dst[3 * i + c] = UInt8(v + 0.5)
                }
            }
        }
        return FaceCrop(size: s, pixels: out)
    }
}
