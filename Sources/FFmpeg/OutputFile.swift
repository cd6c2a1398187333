import CFFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// A stream of an ``OutputFile``.
package struct OutputStream: Sendable, Hashable {
    let index: Int
}

/// A muxer writing to `tempPath` in the format implied by `finalPath` (MP4 when unknown).
/// Freed (and its file closed) on deinit; the caller removes or renames the file.
package final class OutputFile {
    let ctx: UnsafeMutablePointer<AVFormatContext>
    package let tempPath: String
    /// The final file's name, as errors say it.
    package let name: String

    package init(tempPath: String, finalPath: String) throws {
        _ = ffmpegSetup
        name = fileName(finalPath)
        self.tempPath = tempPath
        var c: UnsafeMutablePointer<AVFormatContext>? = nil
        var r = avformat_alloc_output_context2(&c, nil, nil, finalPath)
        if r < 0 || c == nil { r = avformat_alloc_output_context2(&c, nil, "mp4", finalPath) }
        guard r >= 0, let c else { throw FFmpegError(.internalError, "\(name): cannot set up the MP4 writer (\(avErrorString(r)))") }
        ctx = c
    }

    deinit {
        if ctx.pointee.pb != nil { avio_closep(&ctx.pointee.pb) }
        avformat_free_context(ctx)
    }

    /// Whether the container wants codec headers out of band (MP4, MKV).
    package var wantsGlobalHeader: Bool { (ctx.pointee.oformat.pointee.flags & AVFMT_GLOBALHEADER) != 0 }

    private func avStream(_ s: OutputStream) -> UnsafeMutablePointer<AVStream> { ctx.pointee.streams[s.index]! }

    /// Adds a video stream for packets described by `parameters` (copied, not re-encoded), with
    /// time base 1/`frameRate` and `rotation` degrees (counter-clockwise) in its display matrix.
    package func addVideoStream(parameters: VideoParameters, frameRate: Ratio, rotation: Int) throws -> OutputStream {
        guard let st = avformat_new_stream(ctx, nil) else { throw FFmpegError(.internalError, "\(name): cannot add a video stream") }
        try parameters.fill(st.pointee.codecpar, what: name)
        st.pointee.time_base = AVRational(num: Int32(frameRate.den), den: Int32(frameRate.num))
        st.pointee.avg_frame_rate = frameRate.av
        st.pointee.r_frame_rate = frameRate.av
        st.pointee.sample_aspect_ratio = parameters.sampleAspect.av
        let stream = OutputStream(index: Int(st.pointee.index))
        if rotation % 360 != 0 { try setRotation(stream, degrees: rotation) }
        return stream
    }

    /// Adds a stream for `encoder`'s output, averaging `frameRate`.
    package func addStream(for encoder: VideoEncoder, frameRate: Ratio) throws -> OutputStream {
        let s = try addStream(encoder.ctx)
        avStream(s).pointee.avg_frame_rate = frameRate.av
        return s
    }

    /// Adds a stream for an encoded AAC track.
    package func addStream(for track: AACTrack) throws -> OutputStream {
        try addStream(track.encoder.ctx)
    }

    private func addStream(_ encoder: UnsafeMutablePointer<AVCodecContext>) throws -> OutputStream {
        guard let st = avformat_new_stream(ctx, nil) else { throw FFmpegError(.internalError, "\(name): cannot add a stream") }
        let r = avcodec_parameters_from_context(st.pointee.codecpar, encoder)
        guard r >= 0 else { throw FFmpegError(.internalError, "\(name): cannot describe a stream (\(avErrorString(r)))") }
        st.pointee.time_base = encoder.pointee.time_base
        return OutputStream(index: Int(st.pointee.index))
    }

    /// Stores a display matrix rotating `stream` by `degrees` counter-clockwise.
    package func setRotation(_ stream: OutputStream, degrees: Int) throws {
        let r = cffmpeg_stream_set_rotation(avStream(stream), Double(degrees))
        guard r >= 0 else { throw FFmpegError(.internalError, "\(name): cannot store the rotation (\(avErrorString(r)))") }
    }

    /// Opens the file and writes the container header.
    package func begin() throws {
        var r = avio_open(&ctx.pointee.pb, tempPath, AVIO_FLAG_WRITE)
        guard r >= 0 else { throw writeError(r, name, "creating the output file") }
        r = avformat_write_header(ctx, nil)
        guard r >= 0 else { throw writeError(r, name, "writing the header") }
    }

    /// Writes `packet` to `stream`, its timestamps rescaled from `timeBase` to the stream's. The
    /// muxer takes the packet's data; `packet` is empty afterwards.
    package func write(_ packet: Packet, to stream: OutputStream, from timeBase: Ratio) throws {
        let st = avStream(stream)
        packet.p.pointee.stream_index = st.pointee.index
        av_packet_rescale_ts(packet.p, timeBase.av, st.pointee.time_base)
        let r = av_interleaved_write_frame(ctx, packet.p)
        guard r >= 0 else { throw writeError(r, name, "writing packets") }
    }

    /// Writes the trailer and closes the file.
    package func finish() throws {
        var r = av_write_trailer(ctx)
        guard r >= 0 else { throw writeError(r, name, "finishing the file") }
        if let pb = ctx.pointee.pb, pb.pointee.error < 0 { throw writeError(pb.pointee.error, name, "writing the file") }
        r = avio_closep(&ctx.pointee.pb)
        guard r >= 0 else { throw writeError(r, name, "closing the file") }
    }
}
