import CFFmpeg
#if canImport(Glibc)
import Glibc
#endif

/// Decodes a file's audio stream and resamples it to a fixed float layout, streaming.
final class AudioReader {
    let input: InputFile
    let streamIndex: Int
    let decoder: Decoder
    let outRate: Int
    let outChannels: Int
    let planar: Bool
    private var swr: OpaquePointer?
    private var buffers: [UnsafeMutablePointer<Float>] = []
    private var capacity = 0
    /// Duration of the decoded source in seconds (after reading).
    private(set) var sourceSamples: Int64 = 0
    let sourceRate: Int

    /// Opens `path`'s best audio stream; output is `channels` channels of Float at `rate` Hz,
    /// planar (one buffer per channel) or interleaved.
    init(path: String, rate: Int, channels: Int, planar: Bool) throws {
        input = try InputFile(path: path)
        guard let a = input.audioStreamIndex() else {
            throw FFmpegError(.invalidData, "\(input.name): no audio stream (the file holds \(input.describeStreams()))")
        }
        streamIndex = a
        let st = input.avStream(a)
        decoder = try Decoder(parameters: st.pointee.codecpar, timeBase: st.pointee.time_base, threads: 1, what: input.name)
        outRate = rate
        outChannels = channels
        self.planar = planar
        sourceRate = Int(st.pointee.codecpar.pointee.sample_rate)
        guard sourceRate > 0 else { throw FFmpegError(.invalidData, "\(input.name): the audio stream has no sample rate") }
        input.discardAll(except: a)
    }

    deinit {
        if swr != nil { swr_free(&swr) }
        for b in buffers { b.deallocate() }
    }

    private func setUpResampler(for frame: Frame) throws {
        var inLayout = AVChannelLayout()
        defer { av_channel_layout_uninit(&inLayout) }
        if frame.f.pointee.ch_layout.nb_channels > 0 && frame.f.pointee.ch_layout.order != AV_CHANNEL_ORDER_UNSPEC {
            av_channel_layout_copy(&inLayout, &frame.f.pointee.ch_layout)
        } else {
            let n = max(frame.f.pointee.ch_layout.nb_channels, decoder.ctx.pointee.ch_layout.nb_channels)
            av_channel_layout_default(&inLayout, max(n, 1))
        }
        var outLayout = AVChannelLayout()
        defer { av_channel_layout_uninit(&outLayout) }
        av_channel_layout_default(&outLayout, Int32(outChannels))
        let r = swr_alloc_set_opts2(&swr, &outLayout, planar ? AV_SAMPLE_FMT_FLTP : AV_SAMPLE_FMT_FLT, Int32(outRate),
                                    &inLayout, AVSampleFormat(rawValue: frame.f.pointee.format), frame.f.pointee.sample_rate, 0, nil)
        guard r >= 0, swr != nil, swr_init(swr) >= 0 else {
            throw FFmpegError(.unsupported, "\(input.name): cannot convert this audio (\(inLayout.nb_channels) channels at \(frame.f.pointee.sample_rate) Hz) to \(outChannels) channels at \(outRate) Hz")
        }
    }

    private func ensureCapacity(_ n: Int) {
        guard n > capacity else { return }
        for b in buffers { b.deallocate() }
        let perBuffer = planar ? n : n * outChannels
        buffers = (0..<(planar ? outChannels : 1)).map { _ in UnsafeMutablePointer<Float>.allocate(capacity: perBuffer) }
        capacity = n
    }

    private func convert(_ frame: Frame?, _ body: ([UnsafePointer<Float>], Int) throws -> Void) throws {
        guard let swr else { return }
        let inCount = frame.map { Int($0.f.pointee.nb_samples) } ?? 0
        let need = Int(swr_get_out_samples(swr, Int32(inCount))) + 32
        ensureCapacity(max(need, 4096))
        var outs: [UnsafeMutablePointer<UInt8>?] = buffers.map { UnsafeMutableRawPointer($0).assumingMemoryBound(to: UInt8.self) }
        while true {
            let n = cffmpeg_swr_convert(swr, &outs, Int32(capacity), frame?.f)
            if n < 0 { throw FFmpegError(.invalidData, "\(input.name): audio resampling failed (\(avErrorString(n)))") }
            if n > 0 { try body(buffers.map { UnsafePointer($0) }, Int(n)) }
            // With input, one call consumes it all (the buffer is large enough); when flushing, repeat until empty.
            if frame != nil || n == 0 { return }
        }
    }

    /// Decodes the whole stream, calling `body` with chunks of resampled audio: one pointer per
    /// channel (planar) or one interleaved pointer, and the number of samples per channel.
    func read(_ body: ([UnsafePointer<Float>], Int) throws -> Void) throws {
        let pkt = Packet()
        let frame = Frame()
        let handle: (Frame) throws -> Void = { f in
            if self.swr == nil { try self.setUpResampler(for: f) }
            self.sourceSamples += Int64(f.f.pointee.nb_samples)
            try self.convert(f, body)
        }
        while try input.read(into: pkt, failure: { "\(self.input.name): the audio is damaged or truncated (\($0))" }) {
            guard pkt.streamIndex == streamIndex else { continue }
            try decoder.decode(pkt, into: frame, handle)
        }
        try decoder.decode(nil, into: frame, handle)
        try convert(nil, body)
    }
}

/// Decodes the best audio stream of `path` to mono Float PCM at `sampleRate` Hz (empty when the
/// stream holds no samples).
package func decodeMonoPCM(path: String, sampleRate: Int) throws -> [Float] {
    let reader = try AudioReader(path: path, rate: sampleRate, channels: 1, planar: false)
    var out: [Float] = []
    let st = reader.input.avStream(reader.streamIndex)
    if st.pointee.duration > 0 {
        let secs = Double(st.pointee.duration) * Double(st.pointee.time_base.num) / Double(st.pointee.time_base.den)
        if secs.isFinite && secs < 24 * 3600 { out.reserveCapacity(Int(secs * Double(sampleRate)) + 4096) }
    }
    try reader.read { bufs, n in out.append(contentsOf: UnsafeBufferPointer(start: bufs[0], count: n)) }
    return out
}

/// A dub track decoded once, fitted to an exact number of samples and encoded as stereo AAC.
package final class AACTrack {
    let encoder: CodecContext
    /// The encoded packets, timestamps in ``timeBase`` (1/sample rate).
    package private(set) var packets: [Packet] = []
    /// 1/sample rate.
    package let timeBase: Ratio
    /// The source's length in samples at the output rate.
    package private(set) var sourceSamplesAtOutputRate: Int64 = 0

    /// Decodes `path`'s best audio stream, resamples it to stereo at `rate` Hz, pads it with
    /// silence or trims it to exactly `targetSamples` and encodes it with FFmpeg's AAC encoder at
    /// `bitRate` bits/s (`globalHeader`: codec headers out of band, as MP4 wants).
    package init(path: String, rate: Int, bitRate: Int, targetSamples: Int64, globalHeader: Bool) throws {
        timeBase = Ratio(1, rate)
        let reader = try AudioReader(path: path, rate: rate, channels: 2, planar: true)
        let what = reader.input.name
        guard let enc = avcodec_find_encoder_by_name("aac") else {
            throw FFmpegError(.configuration, "the AAC encoder is not available in this FFmpeg build")
        }
        encoder = CodecContext(codec: enc)
        let c = encoder.ctx
        c.pointee.sample_fmt = AV_SAMPLE_FMT_FLTP
        c.pointee.sample_rate = Int32(rate)
        av_channel_layout_default(&c.pointee.ch_layout, 2)
        c.pointee.bit_rate = Int64(bitRate)
        c.pointee.time_base = AVRational(num: 1, den: Int32(rate))
        if globalHeader { c.pointee.flags |= AV_CODEC_FLAG_GLOBAL_HEADER }
        var r = avcodec_open2(c, enc, nil)
        guard r >= 0 else { throw FFmpegError(.configuration, "\(what): cannot open the AAC encoder at \(rate) Hz (\(avErrorString(r)))") }
        let frameSize = Int(c.pointee.frame_size > 0 ? c.pointee.frame_size : 1024)

        let frame = Frame()
        frame.f.pointee.format = AV_SAMPLE_FMT_FLTP.rawValue
        frame.f.pointee.sample_rate = Int32(rate)
        av_channel_layout_default(&frame.f.pointee.ch_layout, 2)
        frame.f.pointee.nb_samples = Int32(frameSize)
        r = av_frame_get_buffer(frame.f, 0)
        guard r >= 0 else { throw FFmpegError(.internalError, "\(what): cannot allocate audio buffers") }
        let pkt = Packet()
        var fill = 0
        var submitted: Int64 = 0   // samples handed to the encoder
        var taken: Int64 = 0       // samples accepted into frames (≤ targetSamples)

        func drain() throws {
            while true {
                let r = avcodec_receive_packet(c, pkt.p)
                if r == averrorEAGAIN || r == averrorEOF { return }
                if r < 0 { throw FFmpegError(.internalError, "\(what): AAC encoding failed (\(avErrorString(r)))") }
                let owned = Packet()
                owned.take(from: pkt)
                packets.append(owned)
            }
        }
        func send(_ f: UnsafeMutablePointer<AVFrame>?) throws {
            let r = avcodec_send_frame(c, f)
            if r < 0 { throw FFmpegError(.internalError, "\(what): AAC encoding failed (\(avErrorString(r)))") }
            try drain()
        }
        func emit(count: Int) throws {
            frame.f.pointee.nb_samples = Int32(count)
            frame.f.pointee.pts = submitted
            try send(frame.f)
            submitted += Int64(count)
            fill = 0
            let r = av_frame_make_writable(frame.f)
            guard r >= 0 else { throw FFmpegError(.internalError, "\(what): cannot allocate audio buffers") }
            frame.f.pointee.nb_samples = Int32(frameSize)
        }
        func append(_ planes: [UnsafePointer<Float>?], _ count: Int) throws {
            var off = 0
            while off < count && taken < targetSamples {
                let n = min(count - off, frameSize - fill, Int(targetSamples - taken))
                for ch in 0..<2 {
                    let dst = UnsafeMutableRawPointer(frame.plane(ch)!).assumingMemoryBound(to: Float.self) + fill
                    if let src = planes[ch] {
                        dst.update(from: src + off, count: n)
                    } else {
                        dst.update(repeating: 0, count: n)
                    }
                }
                fill += n
                off += n
                taken += Int64(n)
                if fill == frameSize { try emit(count: fill) }
            }
        }

        try reader.read { planes, n in
            self.sourceSamplesAtOutputRate += Int64(n)
            try append(planes.map { Optional($0) }, n)
        }
        if sourceSamplesAtOutputRate == 0 { throw FFmpegError(.invalidData, "\(what): the audio track is empty") }
        // Pad with silence up to the video's duration.
        while taken < targetSamples { try append([nil, nil], Int(min(targetSamples - taken, Int64(frameSize)))) }
        if fill > 0 { try emit(count: fill) }
        try send(nil)
    }
}
