import DubfarmCore
import FFmpeg

/// The worker's job: decode a segment's source packets, run the processing stage, encode exactly
/// the segment's frames.
package enum SegmentRenderer {
    /// Renders one segment.
    ///
    /// - Parameters:
    ///   - input: the source packets (from the keyframe at or before the first needed frame).
    ///   - framePTS: presentation timestamps (in `input.codec.timeBase`) of the frames handed to
    ///     the stage, in order; decoded frames with other timestamps are reference-only and dropped.
    ///   - decodedFrames: absolute indices of those frames (same count as `framePTS`).
    ///   - outputFrames: the segment's frames (within `decodedFrames`); exactly these are encoded.
    ///   - frameRate: the job's frame rate; output packets have time base `1/frameRate` and
    ///     pts = absolute frame index.
    ///   - encoder: the job's encoder settings (identical for every segment of a job).
    ///   - layout: the layout the processor works in (`passthrough` uses `.yuv420p`).
    ///   - processor: the processing stage.
    ///   - threads: decoder and encoder threads (0: FFmpeg/x264 choose; 1: single-threaded).
    ///   - progress: called with the number of frames encoded so far; throwing from it (e.g. a
    ///     `.cancelled` error when the lease is lost) abandons the segment.
    ///   - stopEarly: asked before each frame goes to the stage; once it says yes, no further
    ///     frame does: the stage is flushed and the segment ends with the frames finished so far
    ///     (a stopping worker's partial result).
    /// - Returns: the encoded segment: closed GOPs, first packet an IDR, SPS/PPS in the codec
    ///   parameters' extradata; all of `outputFrames`, or, stopped early, its first frames (at
    ///   least one).
    /// - Throws: `.cancelled` when stopped before the first output frame was finished.
    /// - Throws: `DubfarmError` naming the missing frame when the source does not yield one.
    package static func render(input: PacketBundle, framePTS: [Int64], decodedFrames: Range<Int>, outputFrames: Range<Int>,
                              frameRate: Rational, encoder settings: EncoderSettings, layout: VideoFrame.Layout,
                              processor: any FrameProcessor, threads: Int = 0,
                              progress: (Int) throws -> Void = { _ in }, stopEarly: () -> Bool = { false }) throws -> PacketBundle {
        try farmErrors {
            try renderFrames(input: input, framePTS: framePTS, decodedFrames: decodedFrames, outputFrames: outputFrames,
                             frameRate: frameRate, encoder: settings, layout: layout, processor: processor,
                             threads: threads, progress: progress, stopEarly: stopEarly)
        }
    }

    /// Thrown inside the decode loop when ``render(input:framePTS:decodedFrames:outputFrames:frameRate:encoder:layout:processor:threads:progress:stopEarly:)``
    /// is asked to stop early; never leaves it.
    private struct StoppedEarly: Error {}

    private static func renderFrames(input: PacketBundle, framePTS: [Int64], decodedFrames: Range<Int>, outputFrames: Range<Int>,
                                     frameRate: Rational, encoder settings: EncoderSettings, layout: VideoFrame.Layout,
                                     processor: any FrameProcessor, threads: Int,
                                     progress: (Int) throws -> Void, stopEarly: () -> Bool) throws -> PacketBundle {
        let what = "segment \(outputFrames.lowerBound)..<\(outputFrames.upperBound)"
        guard framePTS.count == decodedFrames.count else {
            throw DubfarmError(.badInput, "\(what): \(framePTS.count) frame timestamps for \(decodedFrames.count) decoded frames")
        }
        guard !outputFrames.isEmpty, outputFrames.lowerBound >= decodedFrames.lowerBound,
              outputFrames.upperBound <= decodedFrames.upperBound else {
            throw DubfarmError(.badInput, "\(what): output frames \(outputFrames) are not within the decoded frames \(decodedFrames)")
        }
        guard !input.packets.isEmpty else { throw DubfarmError(.badInput, "\(what): the task carries no video packets") }

        var slotOfPTS: [Int64: Int] = [:]
        slotOfPTS.reserveCapacity(framePTS.count)
        for (i, p) in framePTS.enumerated() where slotOfPTS[p] == nil { slotOfPTS[p] = i }

        // With more than one thread, decoding and encoding each run on a thread of their own,
        // overlapped with the stage (which stays on the calling thread); with one, all three run
        // in turn on the calling thread. Either way the same steps see the same frames in order.
        let inline = threads == 1
        let source = VideoParameters(input.codec)
        let codec = input.codec
        let slots = slotOfPTS, firstFrame = decodedFrames.lowerBound, ptsList = framePTS
        let decoding = try OffThreadStage<EncodedPacket?, VideoFrame>(name: "decode", capacity: 4, inline: inline) {
            try decodeStep(source: source, codec: codec, layout: layout, slots: slots, framePTS: ptsList,
                           firstFrame: firstFrame, threads: threads, what: what)
        }
        defer { decoding.cancel() }
        let encoding = try OffThreadStage<VideoFrame?, Encoded>(name: "encode", capacity: 4, inline: inline) {
            try encodeStep(settings, source: source, codec: codec, frameRate: frameRate, keyframe: outputFrames.lowerBound,
                           threads: threads, what: what)
        }
        defer { encoding.cancel() }

        var packets: [EncodedPacket] = []
        packets.reserveCapacity(outputFrames.count)
        var codecOut: CodecParameters?
        var nextOutput = outputFrames.lowerBound  // next frame index the encoder expects

        func collect(_ encoded: [Encoded]) throws {
            let before = packets.count
            for e in encoded {
                switch e {
                case .packet(let p): packets.append(p)
                case .finished(let c): codecOut = c
                }
            }
            for n in before..<packets.count { try progress(n + 1) }
        }

        func encode(_ vf: VideoFrame) throws {
            guard outputFrames.contains(vf.index) else { return }
            guard vf.index == nextOutput else {
                throw DubfarmError(.internalError, "\(what): the processing stage returned frame \(vf.index) where frame \(nextOutput) was due")
            }
            try encoding.put(vf)
            nextOutput += 1
            try collect(try encoding.takeAvailable())
        }

        func stage(_ frames: [VideoFrame]) throws {
            for vf in frames {
                if stopEarly() { throw StoppedEarly() }
                for out in try processor.process(vf) { try encode(out) }
            }
        }

        var stopped = false
        do {
            for p in input.packets {
                try decoding.put(p)
                try stage(try decoding.takeAvailable())
            }
            try decoding.put(nil)
            try stage(try decoding.finish())
        } catch is StoppedEarly {
            stopped = true
            decoding.cancel()
        }
        // Stopped early, the stage finishes the frames it holds as it would at the segment's end.
        for out in try processor.flush() { try encode(out) }
        try encoding.put(nil)
        try collect(try encoding.finish())

        let finished = outputFrames.lowerBound..<(stopped ? nextOutput : outputFrames.upperBound)
        if stopped && finished.isEmpty {
            throw DubfarmError(.cancelled, "\(what): stopped before its first frame was finished")
        }
        if nextOutput != finished.upperBound {
            throw DubfarmError(.internalError, "\(what): the processing stage returned frames up to \(nextOutput - 1) only; frame \(nextOutput) was never returned")
        }
        guard packets.count == finished.count else {
            throw DubfarmError(.internalError, "\(what): encoded \(packets.count) frames, expected exactly \(finished.count)")
        }
        let sortedPTS = packets.map(\.pts).sorted()
        guard sortedPTS.first == Int64(finished.lowerBound), sortedPTS.last == Int64(finished.upperBound - 1),
              zip(sortedPTS, sortedPTS.dropFirst()).allSatisfy({ $1 == $0 + 1 }) else {
            throw DubfarmError(.internalError, "\(what): the encoder's timestamps do not cover exactly frames \(finished)")
        }
        guard packets[0].isKey else {
            throw DubfarmError(.internalError, "\(what): the encoder's first packet is not a keyframe")
        }
        guard let codecOut else { throw DubfarmError(.internalError, "\(what): the encoder did not report its parameters") }
        return PacketBundle(codec: codecOut, packets: packets)
    }

    /// What the encoding thread hands back: packets, then once the encoder's parameters.
    private enum Encoded: Sendable {
        case packet(EncodedPacket)
        case finished(CodecParameters)
    }

    /// The decoding step: packets (nil: the end) in, the frames named in `slots` out, in slot
    /// order (frames with other timestamps are reference-only and dropped).
    private static func decodeStep(source: VideoParameters, codec: CodecParameters, layout: VideoFrame.Layout,
                                   slots: [Int64: Int], framePTS: [Int64], firstFrame: Int, threads: Int,
                                   what: String) throws -> OffThreadStage<EncodedPacket?, VideoFrame>.Step {
        let decoder = try Decoder(video: source, threads: threads, what: what)
        let converter = FrameConverter(width: codec.width, height: codec.height, what: what)
        let layoutOut = Picture.Layout(layout)
        let decFrame = Frame()
        let pkt = Packet()
        var nextSlot = 0                        // next frame (slot in decodedFrames) to hand on
        var pending: [Int: VideoFrame] = [:]    // frames the decoder returned early (reordering glitches)
        let maxPending = 16
        var ready: [VideoFrame] = []

        func received(_ frame: Frame) throws {
            guard let slot = slots[frame.presentationTime], slot >= nextSlot else { return }  // reference-only or duplicate
            let vf = VideoFrame(try converter.picture(from: frame, layout: layoutOut), index: firstFrame + slot)
            if slot == nextSlot {
                ready.append(vf)
                nextSlot += 1
                while let held = pending.removeValue(forKey: nextSlot) {
                    ready.append(held)
                    nextSlot += 1
                }
            } else {
                pending[slot] = vf
                if pending.count > maxPending { throw missing(firstFrame + nextSlot, what) }
            }
        }

        return .init { packet in
            defer { ready.removeAll(keepingCapacity: true) }
            guard let p = packet else {
                try decoder.decode(nil, into: decFrame, received)
                if nextSlot < framePTS.count { throw missing(firstFrame + nextSlot, what) }
                return ready
            }
            try pkt.load(p)
            do {
                try decoder.decode(pkt, into: decFrame, received)
            } catch {
                // Name the source frame whose packet the decoder refused (FFmpeg conceals what it
                // can; what it refuses fails the segment, and the job, with this frame number).
                let unusable = (error as? FFmpegError).map { $0.code == .invalidData ? $0.message : nil }
                    ?? (error as? DubfarmError).map { $0.code == .badInput ? $0.message : nil }
                guard let message = unusable ?? nil, let slot = framePTS.firstIndex(of: p.pts) else { throw error }
                throw DubfarmError(.badInput, "\(what): source frame \(firstFrame + slot) is damaged and cannot be decoded; \(message)")
            }
            pkt.unref()
            return ready
        }
    }

    /// The encoding step: frames (nil: the end) in, packets out, then the encoder's parameters.
    private static func encodeStep(_ settings: EncoderSettings, source: VideoParameters, codec: CodecParameters,
                                   frameRate: Rational, keyframe: Int, threads: Int,
                                   what: String) throws -> OffThreadStage<VideoFrame?, Encoded>.Step {
        let encoder = try VideoEncoder(settings, width: codec.width, height: codec.height,
                                       frameRate: frameRate, sampleAspect: codec.sampleAspect, color: source,
                                       threads: threads, globalHeader: true, what: what)
        let converter = FrameConverter(width: codec.width, height: codec.height, what: what)
        let encFrame = Frame()
        var out: [Encoded] = []
        func take(_ p: Packet) { out.append(.packet(EncodedPacket(p))) }
        return .init { frame in
            defer { out.removeAll(keepingCapacity: true) }
            guard let vf = frame else {
                try encoder.encode(nil, take)
                out.append(.finished(CodecParameters(encoder.outputParameters(frameRate: Ratio(frameRate)))))
                return out
            }
            try converter.fill(encFrame, from: vf.picture, for: encoder, index: vf.index)
            encFrame.pts = Int64(vf.index)
            encFrame.forcesKeyframe = vf.index == keyframe
            try encoder.encode(encFrame, take)
            return out
        }
    }

    /// Renders the frames `outputFrames` of a window from ``PacketIndex/window(for:context:)``.
    package static func render(input: PacketBundle, window: PacketIndex.Window, outputFrames: Range<Int>,
                              frameRate: Rational, encoder: EncoderSettings, layout: VideoFrame.Layout,
                              processor: any FrameProcessor, threads: Int = 0,
                              progress: (Int) throws -> Void = { _ in }) throws -> PacketBundle {
        try render(input: input, framePTS: window.framePTS, decodedFrames: window.decodedFrames, outputFrames: outputFrames,
                   frameRate: frameRate, encoder: encoder, layout: layout, processor: processor, threads: threads,
                   progress: progress)
    }

    static func missing(_ frame: Int, _ what: String) -> DubfarmError {
        DubfarmError(.badInput, "\(what): source frame \(frame) could not be decoded from the packets sent (missing or damaged); the input may need a re-cut")
    }
}

extension VideoEncoder {
    /// Opens the encoder `settings` name at the job's frame rate (pts = absolute frame index).
    convenience init(_ settings: EncoderSettings, width: Int, height: Int, frameRate: Rational, sampleAspect: Rational,
                     color: VideoParameters?, threads: Int, globalHeader: Bool, what: String) throws {
        try self.init(name: settings.codec, crf: settings.crf, preset: settings.preset, pixelFormat: settings.pixelFormat,
                      width: width, height: height, frameRate: Ratio(frameRate), sampleAspect: Ratio(sampleAspect),
                      color: color, threads: threads, globalHeader: globalHeader, what: what)
    }
}
