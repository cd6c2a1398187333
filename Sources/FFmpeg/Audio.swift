import CFFmpeg
import DubfarmCore
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
            throw DubfarmError(.badInput, "\(input.name): no audio stream (the file holds \(MediaProbe.describeStreams(input)))")
        }
        streamIndex = a
        let st = input.stream(a)
        decoder = try Decoder(parameters: st.pointee.codecpar, timeBase: st.pointee.time_base, threads: 1, what: input.name)
        outRate = rate
        outChannels = channels
        self.planar = planar
        sourceRate = Int(st.pointee.codecpar.pointee.sample_rate)
        guard sourceRate > 0 else { throw DubfarmError(.badInput, "\(input.name): the audio stream has no sample rate") }
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
            throw DubfarmError(.unsupported, "\(input.name): cannot convert this audio (\(inLayout.nb_channels) channels at \(frame.f.pointee.sample_rate) Hz) to \(outChannels) channels at \(outRate) Hz")
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
            if n < 0 { throw DubfarmError(.badInput, "\(input.name): audio resampling failed (\(avErrorString(n)))") }
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
        while true {
            let r = av_read_frame(input.ctx, pkt.p)
            if r == averrorEOF { break }
            if r < 0 { throw DubfarmError(.badInput, "\(input.name): the audio is damaged or truncated (\(avErrorString(r)))") }
            defer { av_packet_unref(pkt.p) }
            guard Int(pkt.p.pointee.stream_index) == streamIndex else { continue }
            try decoder.decode(pkt.p, into: frame, handle)
        }
        try decoder.decode(nil, into: frame, handle)
        try convert(nil, body)
    }
}

/// The dub track as the lip-sync stage needs it.
package enum DubAudio {
    /// Decodes the whole audio track of `path` to 16 kHz mono Float PCM (``AudioWindow/sampleRate``).
    package static func decodePCM(path: String) throws -> [Float] {
        try decodePCM(path: path, sampleRate: AudioWindow.sampleRate)
    }

    /// Decodes the whole audio track of `path` to mono Float PCM at `sampleRate`.
    package static func decodePCM(path: String, sampleRate: Int) throws -> [Float] {
        let reader = try AudioReader(path: path, rate: sampleRate, channels: 1, planar: false)
        var out: [Float] = []
        if let d = reader.input.stream(reader.streamIndex).pointee.duration as Int64?, d > 0 {
            let secs = Double(d) * rational(reader.input.stream(reader.streamIndex).pointee.time_base).value
            if secs.isFinite && secs < 24 * 3600 { out.reserveCapacity(Int(secs * Double(sampleRate)) + 4096) }
        }
        try reader.read { bufs, n in out.append(contentsOf: UnsafeBufferPointer(start: bufs[0], count: n)) }
        guard !out.isEmpty else { throw DubfarmError(.badInput, "\(reader.input.name): the audio track is empty") }
        return out
    }
}
