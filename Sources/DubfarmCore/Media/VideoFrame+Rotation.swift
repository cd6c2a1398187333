extension VideoFrame {
    /// The frame turned by `degrees` counter-clockwise (a multiple of 90; others are taken modulo
    /// 360 and rounded to the nearest quarter turn). For a video whose display matrix says
    /// `rotation` (``VideoStreamInfo/rotation``, as ffprobe reports it), `rotated(by: rotation)`
    /// is the picture as a player shows it, upright; `rotated(by: -rotation)` turns it back.
    ///
    /// Every layout is turned plane by plane; a 4:2:0 frame of odd size keeps its rounded-up
    /// chroma planes. The result is tightly packed; its index is this frame's.
    package func rotated(by degrees: Int) -> VideoFrame {
        let quarter = ((Int((Double(degrees) / 90).rounded()) % 4) + 4) % 4
        guard quarter != 0 else { return self }
        let (w, h) = quarter == 2 ? (width, height) : (height, width)
        let bytesPerPixel = layout == .rgb24 ? 3 : 1
        var outPlanes: [[UInt8]] = []
        var outStrides: [Int] = []
        for (p, plane) in planes.enumerated() {
            // Plane size before turning (chroma planes of 4:2:0 are half size, rounded up).
            let sub = layout == .yuv420p && p > 0
            let pw = sub ? (width + 1) / 2 : width, ph = sub ? (height + 1) / 2 : height
            let ow = quarter == 2 ? pw : ph, oh = quarter == 2 ? ph : pw
            let stride = strides[p], outStride = ow * bytesPerPixel
            var out = [UInt8](repeating: 0, count: outStride * oh)
            plane.withUnsafeBufferPointer { src in
                out.withUnsafeMutableBufferPointer { dst in
                    for y in 0..<oh {
                        for x in 0..<ow {
                            // The source pixel shown at (x, y) after the turn.
                            let (sx, sy): (Int, Int)
                            switch quarter {
                            case 1: (sx, sy) = (pw - 1 - y, x)           // 90° counter-clockwise
                            case 2: (sx, sy) = (pw - 1 - x, ph - 1 - y)  // 180°
                            default: (sx, sy) = (y, ph - 1 - x)          // 270° counter-clockwise
                            }
                            let s = sy * stride + sx * bytesPerPixel, d = y * outStride + x * bytesPerPixel
                            for c in 0..<bytesPerPixel { dst[d + c] = src[s + c] }
                        }
                    }
                }
            }
            outPlanes.append(out)
            outStrides.append(outStride)
        }
        return VideoFrame(width: w, height: h, layout: layout, planes: outPlanes, strides: outStrides, index: index)
    }
}
