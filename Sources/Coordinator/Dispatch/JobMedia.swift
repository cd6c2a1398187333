import DubfarmCore
import FarmStore
import Foundation
import MediaPipeline

/// What the coordinator keeps open for a running job to cut its tasks quickly: the source file
/// with its packet index, the dub track's 16 kHz PCM and the source face.
final class JobMedia {
    let job: JobID
    let source: SourceVideo
    let pcm: [Float]
    let face: [UInt8]?
    let frameRate: Rational
    let encoder: EncoderSettings
    let stage: String
    let model: String?
    var lastUsed = ContinuousClock.now

    init(job: JobRecord, store: MediaStore, defaultStage: String) throws {
        self.job = job.id
        let codec = try CodecParameters.readFile(store.codec(job.id))
        let index = try PacketIndex(decoding: try MediaStore.read(store.packetIndex(job.id)))
        let recut = store.recut(job.id)
        let path = FileManager.default.fileExists(atPath: recut.path) ? recut.path : store.video(job.id).path
        source = try SourceVideo(path: path, codec: codec, index: index)
        pcm = [Float](rawBytes: try MediaStore.read(store.dubPCM(job.id)))
        face = job.faceName == nil ? nil : try MediaStore.read(store.face(job.id))
        guard let rate = job.frameRate else {
            throw DubfarmError(.internalError, "job \(job.id) is running but has no frame rate recorded")
        }
        frameRate = rate
        encoder = job.params.encoder
        stage = job.params.options["stage"] ?? defaultStage
        model = job.params.options["model"]
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
