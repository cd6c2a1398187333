import CFFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// A video or audio decoder with the send/receive loop folded into ``decode(_:into:_:)``.
package final class Decoder {
    let codec: CodecContext
    let what: String
    var ctx: UnsafeMutablePointer<AVCodecContext> { codec.ctx }

    /// Opens a decoder for stream `stream` of `input`.
    package convenience init(input: InputFile, stream: Int, threads: Int) throws {
        let st = input.avStream(stream)
        try self.init(parameters: st.pointee.codecpar, timeBase: st.pointee.time_base, threads: threads, what: input.name)
    }

    /// Opens a video decoder for packets described by `parameters`; errors start with `what`.
    package convenience init(video parameters: VideoParameters, threads: Int, what: String) throws {
        guard let par = avcodec_parameters_alloc() else { fatalError("out of memory") }
        var owned: UnsafeMutablePointer<AVCodecParameters>? = par
        defer { avcodec_parameters_free(&owned) }
        try parameters.fill(par, what: what)
        try self.init(parameters: par, timeBase: parameters.timeBase.av, threads: threads, what: what)
    }

    init(parameters par: UnsafePointer<AVCodecParameters>, timeBase: AVRational, threads: Int, what: String) throws {
        self.what = what
        let id = par.pointee.codec_id
        guard let dec = avcodec_find_decoder(id) else {
            throw FFmpegError(.unsupported, "\(what): codec '\(String(cString: avcodec_get_name(id)))' is not supported (no decoder in this FFmpeg build)")
        }
        codec = CodecContext(codec: dec)
        var r = avcodec_parameters_to_context(codec.ctx, par)
        guard r >= 0 else { throw FFmpegError(.invalidData, "\(what): unusable codec parameters (\(avErrorString(r)))") }
        codec.ctx.pointee.pkt_timebase = timeBase
        codec.ctx.pointee.thread_count = Int32(max(0, threads))
        r = avcodec_open2(codec.ctx, dec, nil)
        guard r >= 0 else { throw FFmpegError(.invalidData, "\(what): cannot open the decoder (\(avErrorString(r)))") }
    }

    /// Sends `packet` (nil: end of stream) and hands every frame now ready to `body`, in `frame`
    /// (emptied again after `body` returns). Damaged data throws `.invalidData`.
    package func decode(_ packet: Packet?, into frame: Frame, _ body: (Frame) throws -> Void) throws {
        var r = avcodec_send_packet(ctx, packet?.p)
        if r == averrorEAGAIN {
            try drain(frame, body)
            r = avcodec_send_packet(ctx, packet?.p)
        }
        if r < 0 && r != averrorEOF {
            throw FFmpegError(.invalidData, "\(what): the compressed data is damaged (\(avErrorString(r)))")
        }
        try drain(frame, body)
    }

    private func drain(_ frame: Frame, _ body: (Frame) throws -> Void) throws {
        while true {
            let r = avcodec_receive_frame(ctx, frame.f)
            if r == averrorEAGAIN || r == averrorEOF { return }
            if r < 0 { throw FFmpegError(.invalidData, "\(what): decoding failed (\(avErrorString(r)))") }
            defer { av_frame_unref(frame.f) }
            try body(frame)
        }
    }
}

/// A video encoder (libx264 by default) whose packets have pts = the frame's pts, in time base
/// 1/frameRate.
package final class VideoEncoder {
    let codec: CodecContext
    let what: String
    var ctx: UnsafeMutablePointer<AVCodecContext> { codec.ctx }
    let avPixelFormat: AVPixelFormat
    private let packet = Packet()

    /// Opens encoder `name` (`libx264`) for `width`×`height` pictures in `pixelFormat` at
    /// `frameRate`: constant quality `crf` at `preset` for x264/x265, closed GOPs, a frame marked
    /// with ``Frame/forcesKeyframe`` becomes an IDR. `color` gives the colour description to
    /// keep; `globalHeader` puts the codec headers out of band (MP4, MKV); `closedGOP` false for
    /// encoders without GOPs (`mjpeg`). Errors start with `what`.
    package init(name: String, crf: Int, preset: String, pixelFormat: String, width: Int, height: Int,
                 frameRate: Ratio, sampleAspect: Ratio, color: VideoParameters?, threads: Int,
                 globalHeader: Bool, closedGOP: Bool = true, what: String) throws {
        self.what = what
        guard let enc = avcodec_find_encoder_by_name(name) else {
            throw FFmpegError(.configuration, "\(what): video encoder '\(name)' is not available in this FFmpeg build")
        }
        guard let fmt = FFmpeg.pixelFormat(named: pixelFormat) else {
            throw FFmpegError(.configuration, "\(what): unknown pixel format '\(pixelFormat)'")
        }
        guard frameRate.isPositive else {
            throw FFmpegError(.configuration, "\(what): frame rate \(frameRate.num)/\(frameRate.den) is not positive")
        }
        if pixelFormat.contains("420") && (width % 2 != 0 || height % 2 != 0) {
            throw FFmpegError(.unsupported, "\(what): the picture is \(width)x\(height); \(pixelFormat) output needs an even width and height")
        }
        avPixelFormat = fmt
        codec = CodecContext(codec: enc)
        let c = codec.ctx
        c.pointee.width = Int32(width)
        c.pointee.height = Int32(height)
        c.pointee.pix_fmt = fmt
        c.pointee.time_base = AVRational(num: Int32(frameRate.den), den: Int32(frameRate.num))
        c.pointee.framerate = frameRate.av
        if sampleAspect.isPositive { c.pointee.sample_aspect_ratio = sampleAspect.av }
        if let color {
            c.pointee.color_range = AVColorRange(rawValue: UInt32(color.colorRange))
            c.pointee.colorspace = AVColorSpace(rawValue: UInt32(color.colorSpace))
            c.pointee.color_primaries = AVColorPrimaries(rawValue: UInt32(color.colorPrimaries))
            c.pointee.color_trc = AVColorTransferCharacteristic(rawValue: UInt32(color.colorTransfer))
        }
        c.pointee.thread_count = Int32(max(0, threads))
        // Intra-only encoders built on mpegvideo (mjpeg) refuse the flag.
        if closedGOP { c.pointee.flags |= cffmpeg_closed_gop_flag() }
        if globalHeader { c.pointee.flags |= AV_CODEC_FLAG_GLOBAL_HEADER }
        if name == "libx264" || name == "libx265" {
            av_opt_set(c.pointee.priv_data, "crf", String(crf), 0)
            av_opt_set(c.pointee.priv_data, "preset", preset, 0)
            av_opt_set(c.pointee.priv_data, "forced-idr", "1", 0)
            // SPS/PPS also in-band before every IDR (a few dozen bytes per segment), so a segment's
            // packets decode on their own even without the extradata.
            if name == "libx264" { av_opt_set(c.pointee.priv_data, "x264-params", "repeat-headers=1", 0) }
        }
        let r = avcodec_open2(c, enc, nil)
        guard r >= 0 else {
            throw FFmpegError(.configuration, "\(what): cannot open encoder \(name) (\(width)x\(height) \(pixelFormat), crf \(crf), preset \(preset)): \(avErrorString(r))")
        }
    }

    /// The pixel format frames must be in.
    package var pixelFormat: String { pixelFormatName(avPixelFormat) }
    /// The time base of the packets' timestamps.
    package var timeBase: Ratio { Ratio(ctx.pointee.time_base) }

    /// The parameters a decoder or muxer needs for this encoder's output.
    package func outputParameters(frameRate: Ratio) -> VideoParameters {
        let c = codec.ctx.pointee
        let extradata: [UInt8] = (c.extradata != nil && c.extradata_size > 0)
            ? [UInt8](UnsafeBufferPointer(start: c.extradata, count: Int(c.extradata_size))) : []
        return VideoParameters(
            codecName: String(cString: avcodec_get_name(c.codec_id)), extradata: extradata,
            width: Int(c.width), height: Int(c.height), pixelFormat: pixelFormatName(c.pix_fmt),
            timeBase: Ratio(frameRate.den, frameRate.num), frameRate: frameRate, sampleAspect: Ratio(c.sample_aspect_ratio),
            profile: Int(c.profile), level: Int(c.level), colorRange: Int(c.color_range.rawValue),
            colorSpace: Int(c.colorspace.rawValue), colorPrimaries: Int(c.color_primaries.rawValue),
            colorTransfer: Int(c.color_trc.rawValue))
    }

    /// Encodes `frame` (nil: flush) and hands every packet now ready to `body` (emptied again
    /// after `body` returns).
    package func encode(_ frame: Frame?, _ body: (Packet) throws -> Void) throws {
        var r = avcodec_send_frame(ctx, frame?.f)
        if r == averrorEAGAIN {
            try drain(body)
            r = avcodec_send_frame(ctx, frame?.f)
        }
        if r < 0 && r != averrorEOF {
            throw FFmpegError(.internalError, "\(what): encoding failed (\(avErrorString(r)))")
        }
        try drain(body)
    }

    private func drain(_ body: (Packet) throws -> Void) throws {
        while true {
            let r = avcodec_receive_packet(ctx, packet.p)
            if r == averrorEAGAIN || r == averrorEOF { return }
            if r < 0 { throw FFmpegError(.internalError, "\(what): encoding failed (\(avErrorString(r)))") }
            defer { av_packet_unref(packet.p) }
            try body(packet)
        }
    }
}
