import Crypto
import DubfarmCore
import FarmConfig
import FarmStore
import Foundation
import MediaPipeline

/// The plan of a video, kept for the next job that dubs the same upload (one programme in ten
/// languages is indexed, and re-cut if it must be, once): `plans/SHA-KEY/` in the media store
/// holds the packet index, the codec parameters, the re-cut file if there is one, and
/// `plan.json`. SHA is the video's SHA-256 (its content id), KEY a digest of the settings that
/// shape a plan, so a changed setting plans afresh. Jobs get hard links to the files.
struct PlanCache {
    let media: MediaStore

    /// What a plan holds besides its files.
    struct Entry: Codable {
        var frameCount: Int
        var frameRateNum: Int
        var frameRateDen: Int
        var width: Int
        var height: Int
        var rotation: Int
        var segmentFrames: Int
        var recut: Bool
    }

    static let version = 1

    /// The cache key of `job`'s plan: the settings that decide it.
    static func key(segmentSeconds: Double, config: FarmConfiguration) -> String {
        let text = "v\(version)|\(segmentSeconds)|\(config.contextFrames)|\(config.maxKeyframeInterval)"
        return SHA256.hash(data: Data(text.utf8)).prefix(8).map { String(format: "%02x", $0) }.joined()
    }

    func directory(video sha: String, key: String) -> URL {
        media.plansRoot.appendingPathComponent("\(sha)-\(key)", isDirectory: true)
    }

    /// Links a kept plan's files into job `id`'s directory and returns the plan, or nil when
    /// there is none (or it is unreadable: then the job plans afresh).
    func reuse(video sha: String, key: String, into id: JobID) -> PlannedJob? {
        let dir = directory(video: sha, key: key)
        guard let data = FileManager.default.contents(atPath: dir.appendingPathComponent("plan.json").path),
              let e = try? JSONDecoder().decode(Entry.self, from: data), e.frameRateNum > 0, e.frameRateDen > 0 else { return nil }
        var files = [("packets.idx", media.packetIndex(id)), ("codec.bin", media.codec(id))]
        if e.recut { files.append(("recut.mp4", media.recut(id))) }
        do {
            for (name, dest) in files {
                try? FileManager.default.removeItem(at: dest)
                try FileManager.default.linkItem(at: dir.appendingPathComponent(name), to: dest)
            }
        } catch {
            return nil
        }
        if !e.recut { try? FileManager.default.removeItem(at: media.recut(id)) }
        MediaStore.syncDirectory(media.jobDir(id))
        // gc counts a plan's age from its last use.
        try? FileManager.default.setAttributes([.modificationDate: Date()], ofItemAtPath: dir.path)
        return PlannedJob(frameCount: e.frameCount, frameRate: Rational(e.frameRateNum, e.frameRateDen), width: e.width, height: e.height,
                          rotation: e.rotation, segmentFrames: e.segmentFrames,
                          spans: SegmentPlanner.plan(frameCount: e.frameCount, segmentFrames: e.segmentFrames))
    }

    /// Keeps job `id`'s fresh plan for the next job of the same video (best effort: a failure
    /// only means the next job plans again).
    func keep(_ plan: PlannedJob, video sha: String, key: String, from id: JobID) {
        let final = directory(video: sha, key: key)
        guard !FileManager.default.fileExists(atPath: final.path) else { return }
        let staging = media.plansRoot.appendingPathComponent(".staging-\(sha)-\(key)-\(id.rawValue)", isDirectory: true)
        try? FileManager.default.removeItem(at: staging)
        do {
            try FileManager.default.createDirectory(at: staging, withIntermediateDirectories: true)
            let recut = FileManager.default.fileExists(atPath: media.recut(id).path)
            var files = [(media.packetIndex(id), "packets.idx"), (media.codec(id), "codec.bin")]
            if recut { files.append((media.recut(id), "recut.mp4")) }
            for (src, name) in files { try FileManager.default.linkItem(at: src, to: staging.appendingPathComponent(name)) }
            let entry = Entry(frameCount: plan.frameCount, frameRateNum: plan.frameRate.num, frameRateDen: plan.frameRate.den,
                              width: plan.width, height: plan.height, rotation: plan.rotation, segmentFrames: plan.segmentFrames, recut: recut)
            try MediaStore.writeAtomically(Array(try JSONEncoder().encode(entry)), to: staging.appendingPathComponent("plan.json"))
            try FileManager.default.moveItem(at: staging, to: final)
            MediaStore.syncDirectory(media.plansRoot)
        } catch {
            try? FileManager.default.removeItem(at: staging)
        }
    }
}
