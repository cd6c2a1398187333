import DubfarmCore

/// An 8-bit single-channel image, rows packed (stride = width).
package struct GrayImage: Sendable {
    package let width: Int
    package let height: Int
    package var pixels: [UInt8]

    package init(width: Int, height: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height, "GrayImage: pixel count does not match size")
        self.width = width
        self.height = height
        self.pixels = pixels
    }

    /// Luma of a frame: the Y plane of yuv420p as is; for rgb24, OpenCV's BT.601 weights
    /// (`0.299 R + 0.587 G + 0.114 B`, 15-bit fixed point, rounded) as `cvtColor(RGB2GRAY)`
    /// computes them (checked against OpenCV 4.12 by LibraryAgreementTests).
    package init(luma frame: VideoFrame) {
        self.init(luma: frame, columns: 0..<frame.width, rows: 0..<frame.height)
    }

    /// Luma of the pixels of `frame` within `columns` × `rows` (clamped to the frame), zero
    /// elsewhere: an image of the frame's size for work that reads only that rectangle.
    package init(luma frame: VideoFrame, columns: Range<Int>, rows: Range<Int>) {
        width = frame.width
        height = frame.height
        var out = [UInt8](repeating: 0, count: frame.width * frame.height)
        let w = frame.width, stride = frame.strides[0]
        let xs = max(0, columns.lowerBound)..<max(max(0, columns.lowerBound), min(w, columns.upperBound))
        let ys = max(0, rows.lowerBound)..<max(max(0, rows.lowerBound), min(frame.height, rows.upperBound))
        switch frame.layout {
        case .yuv420p:
            frame.planes[0].withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for y in ys {
                        for x in xs { dst[y * w + x] = src[y * stride + x] }
                    }
                }
            }
        case .rgb24:
            frame.planes[0].withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for y in ys {
                        var s = y * stride + 3 * xs.lowerBound
                        for x in xs {
                            // 15-bit fixed point, as OpenCV's RGB2Gray<uchar> (RY15, GY15, BY15;
                            // its 14-bit R2Y/G2Y/B2Y are for YUV and differ by 1 on ~0.3% of pixels).
                            let v = 9798 * Int(src[s]) + 19235 * Int(src[s + 1]) + 3735 * Int(src[s + 2])
                            dst[y * w + x] = UInt8(truncatingIfNeeded: (v + 16384) >> 15)
                            s += 3
                        }
                    }
                }
            }
        }
        pixels = out
    }

    /// The image shrunk so that its longer side is at most `maxSide`, by area averaging
    /// (each output pixel is the mean of the input pixels it covers, as `INTER_AREA`).
    /// Returns the image and the factor `input / output` (1 when no shrinking was needed).
    package func downscaled(maxSide: Int) -> (image: GrayImage, factor: Double) {
        let size = Self.downscaledSize(width: width, height: height, maxSide: maxSide)
        guard size.width != width || size.height != height else { return (self, 1) }
        return (resizedArea(to: size.width, size.height), size.factor)
    }

    /// The size ``downscaled(maxSide:)`` gives a `width` × `height` image, and its factor.
    package static func downscaledSize(width: Int, height: Int, maxSide: Int) -> (width: Int, height: Int, factor: Double) {
        let longest = max(width, height)
        guard longest > maxSide else { return (width, height, 1) }
        let f = Double(longest) / Double(maxSide)
        let ow = max(1, Int((Double(width) / f).rounded()))
        let oh = max(1, Int((Double(height) / f).rounded()))
        let fx = Double(width) / Double(ow), fy = Double(height) / Double(oh)
        return (ow, oh, (fx + fy) / 2)
    }

    /// Area-averaging resize to a smaller size (separable; fractional pixel coverage weighted).
    package func resizedArea(to ow: Int, _ oh: Int) -> GrayImage {
        resizedArea(to: ow, oh, region: (0, 0, ow, oh))
    }

    /// Filter taps of a 1-D area resize, flattened: output `o` reads `count` inputs from `first[o]`
    /// with weights `weights[o * count ..< (o + 1) * count]` (zero-padded).
    struct Taps {
        var first: [Int]
        var count: Int
        var weights: [Float]
    }

    static func flatTaps(input: Int, output: Int, range: Range<Int>) -> Taps {
        let nested = areaTaps(input: input, output: output, range: range)
        let count = nested.map(\.count).max() ?? 1
        var first: [Int] = [], weights: [Float] = []
        for taps in nested {
            // Keep every tap inside the input: shift the window left at the right edge.
            let start = min(taps.first?.index ?? 0, max(0, input - count))
            first.append(start)
            var w = [Float](repeating: 0, count: count)
            for t in taps { w[t.index - start] += t.weight }
            weights.append(contentsOf: w)
        }
        return Taps(first: first, count: count, weights: weights)
    }

    struct Tap {
        var index: Int
        var weight: Float
    }

    static func areaTaps(input: Int, output: Int, range: Range<Int>) -> [[Tap]] {
        let scale = Double(input) / Double(output)
        return range.map { o in
            let start = Double(o) * scale, end = min(Double(input), start + scale)
            var taps: [Tap] = []
            var i = Int(start)
            while Double(i) < end {
                let w = min(end, Double(i + 1)) - max(start, Double(i))
                if w > 1e-9 { taps.append(Tap(index: min(i, input - 1), weight: Float(w / scale))) }
                i += 1
            }
            return taps
        }
    }
}

extension GrayImage {
    /// The part `region` (x, y, width, height, in output pixels) of this image area-resized to
    /// `ow × oh`. The pixels equal those of the full resize at the same positions.
    package func resizedArea(to ow: Int, _ oh: Int, region: (x: Int, y: Int, width: Int, height: Int)) -> GrayImage {
        let rx = max(0, region.x), ry = max(0, region.y)
        let rw = max(0, min(ow - rx, region.width)), rh = max(0, min(oh - ry, region.height))
        guard rw > 0, rh > 0 else { return GrayImage(width: rw, height: rh, pixels: [UInt8](repeating: 0, count: rw * rh)) }
        let ht = GrayImage.flatTaps(input: width, output: ow, range: rx..<(rx + rw))
        let vt = GrayImage.flatTaps(input: height, output: oh, range: ry..<(ry + rh))
        let y0 = vt.first[0], y1 = vt.first[rh - 1] + vt.count - 1
        let rows = y1 - y0 + 1
        var tmp = [Float](repeating: 0, count: rw * rows)
        let w = width
        pixels.withUnsafeBufferPointer { src in
            ht.first.withUnsafeBufferPointer { hf in
                ht.weights.withUnsafeBufferPointer { hw in
                    tmp.withUnsafeMutableBufferPointer { dst in
                        let n = ht.count
                        for y in y0...y1 {
                            let row = y * w, orow = (y - y0) * rw
                            for ox in 0..<rw {
                                var acc: Float = 0
                                let f = row + hf[ox], wb = ox * n
                                for k in 0..<n { acc += Float(src[f + k]) * hw[wb + k] }
                                dst[orow + ox] = acc
                            }
                        }
                    }
                }
            }
        }
        var out = [UInt8](repeating: 0, count: rw * rh)
        tmp.withUnsafeBufferPointer { src in
            vt.first.withUnsafeBufferPointer { vf in
                vt.weights.withUnsafeBufferPointer { vw in
                    out.withUnsafeMutableBufferPointer { dst in
                        let n = vt.count
                        for oy in 0..<rh {
                            let f = vf[oy] - y0, wb = oy * n
                            for ox in 0..<rw {
                                var acc: Float = 0
                                for k in 0..<n { acc += src[(f + k) * rw + ox] * vw[wb + k] }
                                // Ties to even, as OpenCV's cvRound: at dyadic scales (512 → 320) ties are
                                // exact and frequent (~2.5% of pixels).
                                dst[oy * rw + ox] = UInt8(max(0, min(255, acc.rounded(.toNearestOrEven))))
                            }
                        }
                    }
                }
            }
        }
        return GrayImage(width: rw, height: rh, pixels: out)
    }
}
