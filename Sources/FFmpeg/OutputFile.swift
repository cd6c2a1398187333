import CFFmpeg
import DubfarmCore
#if canImport(Glibc)
import Glibc
#endif

/// A muxer writing to `tempPath` in the format implied by `finalPath` (MP4 when unknown).
/// Freed (and its file closed) on deinit; the caller removes or renames the file.
final class OutputFile {
    let ctx: UnsafeMutablePointer<AVFormatContext>
    let tempPath: String
    let name: String
    private var headerWritten = false

    init(tempPath: String, finalPath: String) throws {
        _ = ffmpegSetup
        name = fileName(finalPath)
        self.tempPath = tempPath
        var c: UnsafeMutablePointer<AVFormatContext>? = nil
        var r = avformat_alloc_output_context2(&c, nil, nil, finalPath)
        if r < 0 || c == nil { r = avformat_alloc_output_context2(&c, nil, "mp4", finalPath) }
        guard r >= 0, let c else { throw DubfarmError(.internalError, "\(name): cannot set up the MP4 writer (\(avErrorString(r)))") }
        ctx = c
    }

    deinit {
        if ctx.pointee.pb != nil { avio_closep(&ctx.pointee.pb) }
        avformat_free_context(ctx)
    }

    /// Whether the container wants codec headers out of band (MP4, MKV).
    var wantsGlobalHeader: Bool { (ctx.pointee.oformat.pointee.flags & AVFMT_GLOBALHEADER) != 0 }

    /// Adds a video stream copying packets described by `codec`.
    func addVideoStream(codec: CodecParameters, frameRate: Rational, rotation: Int) throws -> UnsafeMutablePointer<AVStream> {
        guard let st = avformat_new_stream(ctx, nil) else { throw DubfarmError(.internalError, "\(name): cannot add a video stream") }
        try fill(st.pointee.codecpar, from: codec, what: name)
        st.pointee.time_base = avRational(frameRate.inverted)
        st.pointee.avg_frame_rate = avRational(frameRate)
        st.pointee.r_frame_rate = avRational(frameRate)
        st.pointee.sample_aspect_ratio = avRational(codec.sampleAspect)
        if rotation % 360 != 0 {
            let r = cffmpeg_stream_set_rotation(st, Double(rotation))
            guard r >= 0 else { throw DubfarmError(.internalError, "\(name): cannot store the rotation (\(avErrorString(r)))") }
        }
        return st
    }

    /// Adds a stream for an opened encoder's output.
    func addStream(for encoder: UnsafeMutablePointer<AVCodecContext>) throws -> UnsafeMutablePointer<AVStream> {
        guard let st = avformat_new_stream(ctx, nil) else { throw DubfarmError(.internalError, "\(name): cannot add a stream") }
        let r = avcodec_parameters_from_context(st.pointee.codecpar, encoder)
        guard r >= 0 else { throw DubfarmError(.internalError, "\(name): cannot describe a stream (\(avErrorString(r)))") }
        st.pointee.time_base = encoder.pointee.time_base
        return st
    }

    /// Opens the file and writes the container header.
    func begin() throws {
        var r = avio_open(&ctx.pointee.pb, tempPath, AVIO_FLAG_WRITE)
        guard r >= 0 else { throw writeError(r, name, "creating the output file") }
        r = avformat_write_header(ctx, nil)
        guard r >= 0 else { throw writeError(r, name, "writing the header") }
        headerWritten = true
    }

    /// Writes one packet (timestamps in `from`, rescaled to the stream's time base).
    func write(_ p: UnsafeMutablePointer<AVPacket>, stream: UnsafeMutablePointer<AVStream>, from tb: AVRational) throws {
        p.pointee.stream_index = stream.pointee.index
        av_packet_rescale_ts(p, tb, stream.pointee.time_base)
        let r = av_interleaved_write_frame(ctx, p)
        guard r >= 0 else { throw writeError(r, name, "writing packets") }
    }

    /// Writes the trailer and closes the file.
    func finish() throws {
        var r = av_write_trailer(ctx)
        guard r >= 0 else { throw writeError(r, name, "finishing the file") }
        if let pb = ctx.pointee.pb, pb.pointee.error < 0 { throw writeError(pb.pointee.error, name, "writing the file") }
        r = avio_closep(&ctx.pointee.pb)
        guard r >= 0 else { throw writeError(r, name, "closing the file") }
    }
}
