import DubfarmCore
import FarmProtocol
import FarmStore
import Foundation
import MediaPipeline

/// What the coordinator keeps open for a running job to cut its tasks quickly: the source file
/// with its packet index, the dub track's 16 kHz PCM and the source face.
final class JobMedia {
    let job: JobID
    let source: SourceVideo
    /// The dub track as 16 kHz mono float PCM on disk; tasks read their window from it.
    let pcm: FileHandle
    let pcmSamples: Int64
    let face: [UInt8]?
    let frameRate: Rational
    let encoder: EncoderSettings
    let stage: String
    let model: String?
    /// SHA-256 of the job's personalised weights, if it has them.
    let weights: String?
    /// The input's display rotation (degrees counter-clockwise).
    let rotation: Int

    init(job: JobRecord, store: MediaStore, defaultStage: String) throws {
        self.job = job.id
        let codec = try CodecParameters.readFile(store.codec(job.id))
        let index = try PacketIndex(decoding: try MediaStore.read(store.packetIndex(job.id)))
        let recut = store.recut(job.id)
        let path = FileManager.default.fileExists(atPath: recut.path) ? recut.path : store.video(job.id).path
        source = try SourceVideo(path: path, codec: codec, index: index)
        guard let handle = try? FileHandle(forReadingFrom: store.dubPCM(job.id)) else {
            throw DubfarmError(.io, "job \(job.id): the decoded dub track is missing from the media store")
        }
        pcm = handle
        pcmSamples = Int64(try handle.seekToEnd()) / 4
        face = job.faceName == nil ? nil : try MediaStore.read(store.face(job.id))
        guard let rate = job.frameRate else {
            throw DubfarmError(.internalError, "job \(job.id) is running but has no frame rate recorded")
        }
        frameRate = rate
        encoder = job.params.encoder
        stage = job.params.options["stage"] ?? defaultStage
        model = job.params.options["model"]
        weights = job.weights
        rotation = job.rotation ?? 0
    }
}

extension JobMedia {
    /// The task for `claim` under `ref`: the source packets of its frames with `contextFrames`
    /// around them (read straight from the file), and the inputs its stage reads.
    func assignment(for claim: ClaimedSegment, ref: TaskRef, contextFrames: Int, audioMarginSeconds: Double) throws -> TaskAssignment {
        let (bundle, window) = try SegmentCutter.cut(source, frames: claim.frames, context: contextFrames)
        // Only stages that read the dub track get its PCM (64 kB per second of window: about
        // 0.7 MB for a 10 s segment with its context and margins).
        let spec = StageCatalog.stage(stage)
        let audio: AudioWindow
        if spec?.usesAudio ?? true {
            let samples = SegmentPlanner.audioSamples(for: window.decodedFrames, frameRate: frameRate, marginSeconds: audioMarginSeconds)
            audio = try audioWindow(samples)
        } else {
            audio = AudioWindow(startSample: 0, samples: [])
        }
        return TaskAssignment(ref: ref, stage: stage, outputFrames: claim.frames, decodedFrames: window.decodedFrames,
                              framePTS: window.framePTS, frameRate: frameRate, encoder: encoder, input: bundle,
                              audio: audio, sourceFace: spec?.usesFace ?? true ? face : nil, model: model,
                              weights: weights, rotation: rotation)
    }

    /// The 16 kHz samples `range` of the dub track; silence outside the track.
    func audioWindow(_ range: Range<Int64>) throws -> AudioWindow {
        var samples = [Float](repeating: 0, count: range.count)
        let lo = max(range.lowerBound, 0), hi = min(range.upperBound, pcmSamples)
        if lo < hi {
            try pcm.seek(toOffset: UInt64(lo * 4))
            let data = try pcm.read(upToCount: Int(hi - lo) * 4) ?? Data()
            let floats = [Float](rawBytes: [UInt8](data))
            let offset = Int(lo - range.lowerBound)
            samples.replaceSubrange(offset..<offset + floats.count, with: floats)
        }
        return AudioWindow(startSample: range.lowerBound, samples: samples)
    }
}

extension CodecParameters {
    func fileBytes() -> [UInt8] {
        var w = ByteWriter()
        write(&w)
        return w.bytes
    }
    static func readFile(_ url: URL) throws -> CodecParameters {
        var r = ByteReader(try MediaStore.read(url))
        return try CodecParameters.read(&r)
    }
}
