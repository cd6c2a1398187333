import CFFmpeg
import DubfarmCore
#if canImport(Glibc)
import Glibc
#endif

/// A video or audio decoder with the send/receive loop folded into `decode(_:into:)`.
final class Decoder {
    let codec: CodecContext
    let what: String
    var ctx: UnsafeMutablePointer<AVCodecContext> { codec.ctx }

    /// Opens a decoder for a stream's parameters.
    init(parameters par: UnsafePointer<AVCodecParameters>, timeBase: AVRational, threads: Int, what: String) throws {
        self.what = what
        let id = par.pointee.codec_id
        guard let dec = avcodec_find_decoder(id) else {
            throw DubfarmError(.unsupported, "\(what): codec '\(String(cString: avcodec_get_name(id)))' is not supported (no decoder in this FFmpeg build)")
        }
        codec = CodecContext(codec: dec)
        var r = avcodec_parameters_to_context(codec.ctx, par)
        guard r >= 0 else { throw DubfarmError(.badInput, "\(what): unusable codec parameters (\(avErrorString(r)))") }
        codec.ctx.pointee.pkt_timebase = timeBase
        codec.ctx.pointee.thread_count = Int32(max(0, threads))
        r = avcodec_open2(codec.ctx, dec, nil)
        guard r >= 0 else { throw DubfarmError(.badInput, "\(what): cannot open the decoder (\(avErrorString(r)))") }
    }

    /// Opens a video decoder for Swift codec parameters.
    convenience init(codec p: CodecParameters, threads: Int, what: String) throws {
        guard let par = avcodec_parameters_alloc() else { fatalError("out of memory") }
        var owned: UnsafeMutablePointer<AVCodecParameters>? = par
        defer { avcodec_parameters_free(&owned) }
        try fill(par, from: p, what: what)
        try self.init(parameters: par, timeBase: avRational(p.timeBase), threads: threads, what: what)
    }

    /// Sends `packet` (nil: end of stream) and hands every frame now ready to `body`.
    func decode(_ packet: UnsafeMutablePointer<AVPacket>?, into frame: Frame, _ body: (Frame) throws -> Void) throws {
        var r = avcodec_send_packet(ctx, packet)
        if r == averrorEAGAIN {
            try drain(frame, body)
            r = avcodec_send_packet(ctx, packet)
        }
        if r < 0 && r != averrorEOF {
            throw DubfarmError(.badInput, "\(what): the compressed data is damaged (\(avErrorString(r)))")
        }
        try drain(frame, body)
    }

    private func drain(_ frame: Frame, _ body: (Frame) throws -> Void) throws {
        while true {
            let r = avcodec_receive_frame(ctx, frame.f)
            if r == averrorEAGAIN || r == averrorEOF { return }
            if r < 0 { throw DubfarmError(.badInput, "\(what): decoding failed (\(avErrorString(r)))") }
            defer { av_frame_unref(frame.f) }
            try body(frame)
        }
    }
}

/// A video encoder (libx264 by default) producing packets with pts = absolute frame index in
/// time base 1/frameRate.
final class VideoEncoder {
    let codec: CodecContext
    let what: String
    var ctx: UnsafeMutablePointer<AVCodecContext> { codec.ctx }
    let pixelFormat: AVPixelFormat
    private let packet = Packet()

    init(settings: EncoderSettings, width: Int, height: Int, frameRate: Rational, sampleAspect: Rational,
         color: CodecParameters?, threads: Int, globalHeader: Bool, what: String) throws {
        self.what = what
        guard let enc = avcodec_find_encoder_by_name(settings.codec) else {
            throw DubfarmError(.configuration, "\(what): video encoder '\(settings.codec)' is not available in this FFmpeg build")
        }
        let fmt = av_get_pix_fmt(settings.pixelFormat)
        guard fmt != AV_PIX_FMT_NONE else {
            throw DubfarmError(.configuration, "\(what): unknown pixel format '\(settings.pixelFormat)'")
        }
        guard frameRate.num > 0, frameRate.den > 0 else {
            throw DubfarmError(.configuration, "\(what): frame rate \(frameRate) is not positive")
        }
        if settings.pixelFormat.contains("420") && (width % 2 != 0 || height % 2 != 0) {
            throw DubfarmError(.unsupported, "\(what): the picture is \(width)x\(height); \(settings.pixelFormat) output needs an even width and height")
        }
        pixelFormat = fmt
        codec = CodecContext(codec: enc)
        let c = codec.ctx
        c.pointee.width = Int32(width)
        c.pointee.height = Int32(height)
        c.pointee.pix_fmt = fmt
        c.pointee.time_base = avRational(frameRate.inverted)
        c.pointee.framerate = avRational(frameRate)
        if sampleAspect.num > 0 && sampleAspect.den > 0 { c.pointee.sample_aspect_ratio = avRational(sampleAspect) }
        if let color {
            c.pointee.color_range = AVColorRange(rawValue: UInt32(color.colorRange))
            c.pointee.colorspace = AVColorSpace(rawValue: UInt32(color.colorSpace))
            c.pointee.color_primaries = AVColorPrimaries(rawValue: UInt32(color.colorPrimaries))
            c.pointee.color_trc = AVColorTransferCharacteristic(rawValue: UInt32(color.colorTransfer))
        }
        c.pointee.thread_count = Int32(max(0, threads))
        c.pointee.flags |= cffmpeg_closed_gop_flag()
        if globalHeader { c.pointee.flags |= AV_CODEC_FLAG_GLOBAL_HEADER }
        if settings.codec == "libx264" || settings.codec == "libx265" {
            av_opt_set(c.pointee.priv_data, "crf", String(settings.crf), 0)
            av_opt_set(c.pointee.priv_data, "preset", settings.preset, 0)
            av_opt_set(c.pointee.priv_data, "forced-idr", "1", 0)
            // SPS/PPS also in-band before every IDR (a few dozen bytes per segment), so a segment's
            // packets decode on their own even without the extradata.
            if settings.codec == "libx264" { av_opt_set(c.pointee.priv_data, "x264-params", "repeat-headers=1", 0) }
        }
        let r = avcodec_open2(c, enc, nil)
        guard r >= 0 else {
            throw DubfarmError(.configuration, "\(what): cannot open encoder \(settings.codec) (\(width)x\(height) \(settings.pixelFormat), crf \(settings.crf), preset \(settings.preset)): \(avErrorString(r))")
        }
    }

    /// The parameters a decoder or muxer needs for this encoder's output.
    func outputCodecParameters(frameRate: Rational) -> CodecParameters {
        let c = codec.ctx.pointee
        let extradata: [UInt8] = (c.extradata != nil && c.extradata_size > 0)
            ? [UInt8](UnsafeBufferPointer(start: c.extradata, count: Int(c.extradata_size))) : []
        return CodecParameters(
            codecName: String(cString: avcodec_get_name(c.codec_id)), extradata: extradata,
            width: Int(c.width), height: Int(c.height), pixelFormat: pixelFormatName(c.pix_fmt),
            timeBase: frameRate.inverted, frameRate: frameRate, sampleAspect: rational(c.sample_aspect_ratio),
            profile: Int(c.profile), level: Int(c.level), colorRange: Int(c.color_range.rawValue),
            colorSpace: Int(c.colorspace.rawValue), colorPrimaries: Int(c.color_primaries.rawValue),
            colorTransfer: Int(c.color_trc.rawValue))
    }

    /// Encodes `frame` (nil: flush) and hands every packet now ready to `body`.
    func encode(_ frame: UnsafeMutablePointer<AVFrame>?, _ body: (UnsafeMutablePointer<AVPacket>) throws -> Void) throws {
        var r = avcodec_send_frame(ctx, frame)
        if r == averrorEAGAIN {
            try drain(body)
            r = avcodec_send_frame(ctx, frame)
        }
        if r < 0 && r != averrorEOF {
            throw DubfarmError(.internalError, "\(what): encoding failed (\(avErrorString(r)))")
        }
        try drain(body)
    }

    private func drain(_ body: (UnsafeMutablePointer<AVPacket>) throws -> Void) throws {
        while true {
            let r = avcodec_receive_packet(ctx, packet.p)
            if r == averrorEAGAIN || r == averrorEOF { return }
            if r < 0 { throw DubfarmError(.internalError, "\(what): encoding failed (\(avErrorString(r)))") }
            defer { av_packet_unref(packet.p) }
            try body(packet.p)
        }
    }
}

/// Converts decoded frames to `VideoFrame`s (tightly packed planes) and back.
final class FrameConverter {
    let width: Int
    let height: Int
    let what: String
    private var toSwift: Scaler?
    private var toSwiftKey: (Int32, Int32, Int32, VideoFrame.Layout)?
    private var toAV: Scaler?
    private var toAVKey: (VideoFrame.Layout, Int32)?

    init(width: Int, height: Int, what: String) {
        self.width = width
        self.height = height
        self.what = what
    }

    static func avFormat(_ layout: VideoFrame.Layout) -> AVPixelFormat {
        layout == .rgb24 ? AV_PIX_FMT_RGB24 : AV_PIX_FMT_YUV420P
    }

    /// Plane sizes of a tightly packed frame.
    static func planeGeometry(_ layout: VideoFrame.Layout, width: Int, height: Int) -> [(stride: Int, rows: Int)] {
        switch layout {
        case .rgb24: return [(width * 3, height)]
        case .yuv420p:
            let cw = (width + 1) / 2, ch = (height + 1) / 2
            return [(width, height), (cw, ch), (cw, ch)]
        }
    }

    /// A decoded frame as a `VideoFrame` in `layout`, numbered `index`.
    func videoFrame(from frame: Frame, layout: VideoFrame.Layout, index: Int) throws -> VideoFrame {
        let f = frame.f.pointee
        let w = Int(f.width), h = Int(f.height)
        let geo = Self.planeGeometry(layout, width: w, height: h)
        var planes = geo.map { [UInt8](repeating: 0, count: $0.stride * $0.rows) }
        let dstFmt = Self.avFormat(layout)
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
            guard r > 0 else { throw DubfarmError(.internalError, "\(what): pixel conversion failed") }
        }
        return VideoFrame(width: w, height: h, layout: layout, planes: planes, strides: geo.map(\.stride), index: index)
    }

    /// Writes a `VideoFrame` into `dst` (allocated here in `format` at the frame's size).
    func fill(_ dst: Frame, from vf: VideoFrame, format: AVPixelFormat) throws {
        guard vf.width == width, vf.height == height else {
            throw DubfarmError(.internalError, "\(what): the processor returned a \(vf.width)x\(vf.height) frame for a \(width)x\(height) video")
        }
        let geo = Self.planeGeometry(vf.layout, width: vf.width, height: vf.height)
        let wellFormed = vf.planes.count == geo.count && vf.strides.count == geo.count && geo.indices.allSatisfy { i in
            vf.strides[i] >= geo[i].stride && vf.planes[i].count >= vf.strides[i] * (geo[i].rows - 1) + geo[i].stride
        }
        guard wellFormed else {
            throw DubfarmError(.internalError, "\(what): frame \(vf.index) has malformed planes for \(vf.layout)")
        }
        let f = dst.f
        if f.pointee.data.0 == nil || f.pointee.format != format.rawValue || Int(f.pointee.width) != width || Int(f.pointee.height) != height {
            av_frame_unref(f)
            f.pointee.format = format.rawValue
            f.pointee.width = Int32(width)
            f.pointee.height = Int32(height)
            let r = av_frame_get_buffer(f, 0)
            guard r >= 0 else { throw DubfarmError(.internalError, "\(what): cannot allocate a frame (\(avErrorString(r)))") }
        } else {
            let r = av_frame_make_writable(f)
            guard r >= 0 else { throw DubfarmError(.internalError, "\(what): cannot allocate a frame (\(avErrorString(r)))") }
        }
        if Self.avFormat(vf.layout) == format {
            for i in 0..<geo.count {
                let dstPlane = dst.plane(i)!
                let ls = dst.linesize(i)
                let rowBytes = geo[i].stride
                vf.planes[i].withUnsafeBytes { src in
                    for y in 0..<geo[i].rows {
                        memcpy(dstPlane + y * ls, src.baseAddress! + y * vf.strides[i], rowBytes)
                    }
                }
            }
        } else {
            let key = (vf.layout, format.rawValue)
            if toAV == nil || toAVKey! != key {
                toAV = try Scaler(srcWidth: width, srcHeight: height, srcFormat: Self.avFormat(vf.layout),
                                  dstWidth: width, dstHeight: height, dstFormat: format, what: what)
                toAVKey = key
            }
            let sws = toAV!.sws
            let h = Int32(height)
            let r: Int32
            switch vf.layout {
            case .rgb24:
                r = vf.planes[0].withUnsafeBufferPointer { p0 in
                    cffmpeg_scale_to_frame(sws, p0.baseAddress, Int32(vf.strides[0]), nil, 0, nil, 0, h, f)
                }
            case .yuv420p:
                r = vf.planes[0].withUnsafeBufferPointer { p0 in
                    vf.planes[1].withUnsafeBufferPointer { p1 in
                        vf.planes[2].withUnsafeBufferPointer { p2 in
                            cffmpeg_scale_to_frame(sws, p0.baseAddress, Int32(vf.strides[0]), p1.baseAddress, Int32(vf.strides[1]),
                                                   p2.baseAddress, Int32(vf.strides[2]), h, f)
                        }
                    }
                }
            }
            guard r > 0 else { throw DubfarmError(.internalError, "\(what): pixel conversion failed") }
        }
    }
}
