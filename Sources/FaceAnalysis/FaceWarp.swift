import DubfarmCore
import Foundation

/// A square RGB face crop, rgb24 packed (`size × size × 3`).
package struct FaceCrop: Sendable, Hashable {
    package let size: Int
    package var pixels: [UInt8]

    package init(size: Int, pixels: [UInt8]) {
        precondition(pixels.count == size * size * 3, "FaceCrop: pixel count does not match size")
        self.size = size
        self.pixels = pixels
    }
}

/// The feathered masks used when pasting a crop back.
///
/// Defined in normalised crop coordinates `(u, v) ∈ [0, 1]²` of an FFHQ-aligned crop (eyes near
/// v = 0.47, mouth near v = 0.72): weight 1 inside, falling smoothly (smoothstep) to exactly 0 at
/// the edge, so pixels beyond the edge are never touched.
package enum BlendMask: Sendable, Hashable {
    /// Below the nose: lip sync redraws only this (the model's lower half).
    case lowerFace
    /// The face oval: face swap redraws this.
    case wholeFace

    /// The weight at normalised crop coordinates.
    @inline(__always)
    package func weight(u: Double, v: Double) -> Double {
        switch self {
        case .wholeFace:
            return BlendMask.ellipse(u, v, cu: 0.5, cv: 0.56, ru: 0.31, rv: 0.38, feather: 0.22)
        case .lowerFace:
            let e = BlendMask.ellipse(u, v, cu: 0.5, cv: 0.66, ru: 0.29, rv: 0.27, feather: 0.25)
            return e * BlendMask.smoothstep(0.54, 0.62, v)
        }
    }

    /// The part of the crop `(u0, v0, u1, v1)` outside which the weight is 0.
    package var support: (u0: Double, v0: Double, u1: Double, v1: Double) {
        switch self {
        case .wholeFace: return (0.5 - 0.31, 0.56 - 0.38, 0.5 + 0.31, 0.56 + 0.38)
        case .lowerFace: return (0.5 - 0.29, 0.54, 0.5 + 0.29, 0.66 + 0.27)
        }
    }

    @inline(__always)
    static func smoothstep(_ e0: Double, _ e1: Double, _ x: Double) -> Double {
        let t = min(1, max(0, (x - e0) / (e1 - e0)))
        return t * t * (3 - 2 * t)
    }

    /// 1 inside `(1 - feather)` of the ellipse radius, 0 outside it, smoothstep between.
    @inline(__always)
    static func ellipse(_ u: Double, _ v: Double, cu: Double, cv: Double, ru: Double, rv: Double, feather: Double) -> Double {
        let du = (u - cu) / ru, dv = (v - cv) / rv
        let r = (du * du + dv * dv).squareRoot()
        return 1 - smoothstep(1 - feather, 1, r)
    }
}

/// Warping between frames and face crops with a ``SimilarityTransform`` (crop → frame).
package enum FaceWarp {
    /// Samples the `size × size` crop: each crop pixel centre is mapped into the frame and read
    /// with bilinear interpolation (edge pixels repeated outside the frame). Frames must be rgb24.
    package static func crop(_ frame: VideoFrame, transform t: SimilarityTransform, size: Int) throws -> FaceCrop {
        try requireRGB(frame)
        guard size > 0, size <= 4096 else {
            throw DubfarmError(.badInput, "Face crop size \(size) is out of range (1…4096).")
        }
        var out = [UInt8](repeating: 0, count: size * size * 3)
        let w = frame.width, h = frame.height, stride = frame.strides[0]
        frame.planes[0].withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for v in 0..<size {
                    // Frame position of crop pixel (0, v)'s centre, minus 0.5 for pixel-centre sampling.
                    let cv = Double(v) + 0.5
                    var fx = t.a * 0.5 - t.b * cv + t.tx - 0.5
                    var fy = t.b * 0.5 + t.a * cv + t.ty - 0.5
                    for u in 0..<size {
                        bilinear(src, w, h, stride, fx, fy, dst, (v * size + u) * 3)
                        fx += t.a
                        fy += t.b
                    }
                }
            }
        }
        return FaceCrop(size: size, pixels: out)
    }

    /// Pastes `crop` back into `frame` through the inverse transform, blending with `mask`:
    /// `out = in + m·(crop − in)`, rounded. Pixels where the mask weight is 0 are not written,
    /// so they stay bit-identical. Returns the number of pixels written.
    @discardableResult
    package static func paste(_ crop: FaceCrop, into frame: inout VideoFrame, transform t: SimilarityTransform,
                             mask: BlendMask) throws -> Int {
        try requireRGB(frame)
        let s = crop.size, ds = Double(s)
        let inv = t.inverse
        // Frame-pixel bounds of the mask's support.
        let m = mask.support
        let corners = [Point2(m.u0 * ds, m.v0 * ds), Point2(m.u1 * ds, m.v0 * ds), Point2(m.u0 * ds, m.v1 * ds),
                       Point2(m.u1 * ds, m.v1 * ds)].map(t.apply)
        let x0 = max(0, Int(corners.map(\.x).min()!.rounded(.down)))
        let x1 = min(frame.width - 1, Int(corners.map(\.x).max()!.rounded(.up)))
        let y0 = max(0, Int(corners.map(\.y).min()!.rounded(.down)))
        let y1 = min(frame.height - 1, Int(corners.map(\.y).max()!.rounded(.up)))
        guard x0 <= x1, y0 <= y1 else { return 0 }
        let stride = frame.strides[0]
        var written = 0
        crop.pixels.withUnsafeBufferPointer { src in
            frame.planes[0].withUnsafeMutableBufferPointer { dst in
                var sample = (0.0, 0.0, 0.0)
                for y in y0...y1 {
                    let py = Double(y) + 0.5
                    for x in x0...x1 {
                        let px = Double(x) + 0.5
                        let cu = inv.a * px - inv.b * py + inv.tx
                        let cv = inv.b * px + inv.a * py + inv.ty
                        if cu <= 0 || cv <= 0 || cu >= ds || cv >= ds { continue }
                        let m = mask.weight(u: cu / ds, v: cv / ds)
                        if m <= 0 { continue }
                        bilinearRGB(src, s, cu - 0.5, cv - 0.5, &sample)
                        let o = y * stride + x * 3
                        let r = Double(dst[o]), g = Double(dst[o + 1]), b = Double(dst[o + 2])
                        dst[o] = clamp8(r + m * (sample.0 - r))
                        dst[o + 1] = clamp8(g + m * (sample.1 - g))
                        dst[o + 2] = clamp8(b + m * (sample.2 - b))
                        written += 1
                    }
                }
            }
        }
        return written
    }

    /// Whether frame pixel (x, y) lies where ``paste(_:into:transform:mask:)`` may write.
    package static func maskWeight(atFramePixel x: Int, _ y: Int, transform t: SimilarityTransform, cropSize: Int, mask: BlendMask) -> Double {
        let inv = t.inverse, ds = Double(cropSize)
        let q = inv.apply(Point2(Double(x) + 0.5, Double(y) + 0.5))
        if q.x <= 0 || q.y <= 0 || q.x >= ds || q.y >= ds { return 0 }
        return mask.weight(u: q.x / ds, v: q.y / ds)
    }

    static func requireRGB(_ frame: VideoFrame) throws {
        guard frame.layout == .rgb24 else {
            throw DubfarmError(.unsupported, "Face warping needs rgb24 frames; frame \(frame.index) is \(frame.layout.rawValue).")
        }
    }

    @inline(__always)
    static func clamp8(_ v: Double) -> UInt8 {
        // Round half up by truncation (the value is non-negative after clamping).
        UInt8(truncatingIfNeeded: Int(max(0, min(255, v)) + 0.5))
    }

    @inline(__always)
    static func bilinear(_ src: UnsafeBufferPointer<UInt8>, _ w: Int, _ h: Int, _ stride: Int,
                         _ x: Double, _ y: Double, _ dst: UnsafeMutableBufferPointer<UInt8>, _ o: Int) {
        let xf = x.rounded(.down), yf = y.rounded(.down)
        let ax = x - xf, ay = y - yf
        let xi = Int(xf), yi = Int(yf)
        let xa = min(max(xi, 0), w - 1), xb = min(max(xi + 1, 0), w - 1)
        let ya = min(max(yi, 0), h - 1), yb = min(max(yi + 1, 0), h - 1)
        let p00 = ya * stride + xa * 3, p01 = ya * stride + xb * 3
        let p10 = yb * stride + xa * 3, p11 = yb * stride + xb * 3
        for c in 0..<3 {
            let top = Double(src[p00 + c]) + ax * (Double(src[p01 + c]) - Double(src[p00 + c]))
            let bot = Double(src[p10 + c]) + ax * (Double(src[p11 + c]) - Double(src[p10 + c]))
            dst[o + c] = clamp8(top + ay * (bot - top))
        }
    }

    @inline(__always)
    static func bilinearRGB(_ src: UnsafeBufferPointer<UInt8>, _ s: Int, _ x: Double, _ y: Double, _ out: inout (Double, Double, Double)) {
        let xf = x.rounded(.down), yf = y.rounded(.down)
        let ax = x - xf, ay = y - yf
        let xi = Int(xf), yi = Int(yf)
        let xa = min(max(xi, 0), s - 1), xb = min(max(xi + 1, 0), s - 1)
        let ya = min(max(yi, 0), s - 1), yb = min(max(yi + 1, 0), s - 1)
        let st = s * 3
        let p00 = ya * st + xa * 3, p01 = ya * st + xb * 3, p10 = yb * st + xa * 3, p11 = yb * st + xb * 3
        func ch(_ c: Int) -> Double {
            let top = Double(src[p00 + c]) + ax * (Double(src[p01 + c]) - Double(src[p00 + c]))
            let bot = Double(src[p10 + c]) + ax * (Double(src[p11 + c]) - Double(src[p10 + c]))
            return top + ay * (bot - top)
        }
        out = (ch(0), ch(1), ch(2))
    }
}
