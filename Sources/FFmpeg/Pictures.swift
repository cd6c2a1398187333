import CFFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// A picture in Swift memory: tightly packed planes, row `y` of plane `i` at `y * strides[i]`.
package struct Picture: Sendable {
    /// The two layouts the farm's stages work in.
    package enum Layout: Sendable, Hashable {
        /// One plane, 3 bytes per pixel.
        case rgb24
        /// Planar 4:2:0: Y at full size, U and V at half width and height (rounded up).
        case yuv420p
    }

    package var width: Int
    package var height: Int
    package var layout: Layout
    package var planes: [[UInt8]]
    package var strides: [Int]

    package init(width: Int, height: Int, layout: Layout, planes: [[UInt8]], strides: [Int]) {
        self.width = width
        self.height = height
        self.layout = layout
        self.planes = planes
        self.strides = strides
    }

    /// Stride and row count of each plane of a tightly packed picture.
    package static func planeGeometry(_ layout: Layout, width: Int, height: Int) -> [(stride: Int, rows: Int)] {
        switch layout {
        case .rgb24: return [(width * 3, height)]
        case .yuv420p:
            let cw = (width + 1) / 2, ch = (height + 1) / 2
            return [(width, height), (cw, ch), (cw, ch)]
        }
    }

    static func avFormat(_ layout: Layout) -> AVPixelFormat {
        layout == .rgb24 ? AV_PIX_FMT_RGB24 : AV_PIX_FMT_YUV420P
    }
}

/// Converts decoded frames of one video's size to ``Picture``s and back, and frames to another
/// pixel format. Keeps its swscale contexts between calls.
package final class FrameConverter {
    let width: Int
    let height: Int
    let what: String
    private var toSwift: Scaler?
    private var toSwiftKey: (Int32, Int32, Int32, Picture.Layout)?
    private var toAV: Scaler?
    private var toAVKey: (Picture.Layout, Int32)?
    private var toFormat: Scaler?
    private var toFormatKey: (Int32, Int32, Int32, Int32)?

    /// A converter for `width`×`height` pictures; errors start with `what`.
    package init(width: Int, height: Int, what: String) {
        self.width = width
        self.height = height
        self.what = what
    }

    /// A decoded frame as a ``Picture`` in `layout`.
    package func picture(from frame: Frame, layout: Picture.Layout) throws -> Picture {
        let f = frame.f.pointee
        let w = Int(f.width), h = Int(f.height)
        let geo = Picture.planeGeometry(layout, width: w, height: h)
        var planes = geo.map { [UInt8](repeating: 0, count: $0.stride * $0.rows) }
        let dstFmt = Picture.avFormat(layout)
        if f.format == dstFmt.rawValue {
            // Same format: copy rows, no conversion.
            for (i, g) in geo.enumerated() {
                guard let src = frame.plane(i) else { continue }
                let ls = frame.linesize(i)
                let rowBytes = min(g.stride, abs(ls))
                planes[i].withUnsafeMutableBytes { dst in
                    for y in 0..<g.rows {
                        memcpy(dst.baseAddress! + y * g.stride, src + y * ls, rowBytes)
                    }
                }
            }
        } else {
            let key = (f.format, f.width, f.height, layout)
            if toSwift == nil || toSwiftKey! != key {
                toSwift = try Scaler(srcWidth: w, srcHeight: h, srcFormat: AVPixelFormat(rawValue: f.format),
                                     dstWidth: w, dstHeight: h, dstFormat: dstFmt, what: what)
                toSwiftKey = key
            }
            let sws = toSwift!.sws
            let r: Int32
            switch layout {
            case .rgb24:
                r = planes[0].withUnsafeMutableBufferPointer { p0 in
                    cffmpeg_scale_from_frame(sws, frame.f, p0.baseAddress, Int32(geo[0].stride), nil, 0, nil, 0)
                }
            case .yuv420p:
                var y = planes[0], u = planes[1], v = planes[2]
                planes = []
                r = y.withUnsafeMutableBufferPointer { p0 in
                    u.withUnsafeMutableBufferPointer { p1 in
                        v.withUnsafeMutableBufferPointer { p2 in
                            cffmpeg_scale_from_frame(sws, frame.f, p0.baseAddress, Int32(geo[0].stride),
                                                     p1.baseAddress, Int32(geo[1].stride), p2.baseAddress, Int32(geo[2].stride))
                        }
                    }
                }
                planes = [y, u, v]
            }
            guard r > 0 else { throw FFmpegError(.internalError, "\(what): pixel conversion failed") }
        }
        return Picture(width: w, height: h, layout: layout, planes: planes, strides: geo.map(\.stride))
    }

    /// Writes `picture` into `dst`, allocated here in `encoder`'s pixel format at the
    /// converter's size. `index` names the picture in errors.
    package func fill(_ dst: Frame, from picture: Picture, for encoder: VideoEncoder, index: Int) throws {
        guard picture.width == width, picture.height == height else {
            throw FFmpegError(.internalError, "\(what): the processor returned a \(picture.width)x\(picture.height) frame for a \(width)x\(height) video")
        }
        let format = encoder.avPixelFormat
        let geo = Picture.planeGeometry(picture.layout, width: picture.width, height: picture.height)
        let wellFormed = picture.planes.count == geo.count && picture.strides.count == geo.count && geo.indices.allSatisfy { i in
            picture.strides[i] >= geo[i].stride && picture.planes[i].count >= picture.strides[i] * (geo[i].rows - 1) + geo[i].stride
        }
        guard wellFormed else {
            throw FFmpegError(.internalError, "\(what): frame \(index) has malformed planes for \(picture.layout)")
        }
        try dst.prepare(format: format, width: width, height: height, what: what)
        let f = dst.f
        if Picture.avFormat(picture.layout) == format {
            for i in 0..<geo.count {
                let dstPlane = dst.plane(i)!
                let ls = dst.linesize(i)
                let rowBytes = geo[i].stride
                picture.planes[i].withUnsafeBytes { src in
                    for y in 0..<geo[i].rows {
                        memcpy(dstPlane + y * ls, src.baseAddress! + y * picture.strides[i], rowBytes)
                    }
                }
            }
        } else {
            let key = (picture.layout, format.rawValue)
            if toAV == nil || toAVKey! != key {
                toAV = try Scaler(srcWidth: width, srcHeight: height, srcFormat: Picture.avFormat(picture.layout),
                                  dstWidth: width, dstHeight: height, dstFormat: format, what: what)
                toAVKey = key
            }
            let sws = toAV!.sws
            let h = Int32(height)
            let r: Int32
            switch picture.layout {
            case .rgb24:
                r = picture.planes[0].withUnsafeBufferPointer { p0 in
                    cffmpeg_scale_to_frame(sws, p0.baseAddress, Int32(picture.strides[0]), nil, 0, nil, 0, h, f)
                }
            case .yuv420p:
                r = picture.planes[0].withUnsafeBufferPointer { p0 in
                    picture.planes[1].withUnsafeBufferPointer { p1 in
                        picture.planes[2].withUnsafeBufferPointer { p2 in
                            cffmpeg_scale_to_frame(sws, p0.baseAddress, Int32(picture.strides[0]), p1.baseAddress, Int32(picture.strides[1]),
                                                   p2.baseAddress, Int32(picture.strides[2]), h, f)
                        }
                    }
                }
            }
            guard r > 0 else { throw FFmpegError(.internalError, "\(what): pixel conversion failed") }
        }
    }

    /// `src` in `encoder`'s pixel format at the converter's size: `src` itself when it already
    /// is, else converted into `scratch` (allocated once, reused) and `scratch` returned.
    package func convert(_ src: Frame, for encoder: VideoEncoder, scratch: Frame) throws -> Frame {
        let format = encoder.avPixelFormat
        let s = src.f.pointee
        guard s.format != format.rawValue else { return src }
        let key = (s.format, s.width, s.height, format.rawValue)
        if toFormat == nil || toFormatKey! != key {
            toFormat = try Scaler(srcWidth: Int(s.width), srcHeight: Int(s.height), srcFormat: AVPixelFormat(rawValue: s.format),
                                  dstWidth: width, dstHeight: height, dstFormat: format, what: what)
            toFormatKey = key
        }
        try scratch.prepare(format: format, width: width, height: height, what: what)
        cffmpeg_scale_frame_to_frame(toFormat!.sws, src.f, scratch.f)
        return scratch
    }
}
