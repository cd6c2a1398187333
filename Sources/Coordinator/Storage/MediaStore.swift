import DubfarmCore
import DurableFiles
import Foundation
import Glibc
import MediaPipeline

/// The coordinator's disk: uploads, each job's inputs and intermediate files, segment results
/// and outputs.
///
/// Every path is derived from ids the coordinator made (job ids, upload ids it generated,
/// segment indexes, lease tokens): nothing a client sends can name a path, so nothing can point
/// outside the store. Every file is written under a temporary name, fsynced, then renamed: a
/// partially written file is never taken as finished.
package struct MediaStore: Sendable {
    package let root: URL

    package init(root: String) throws {
        self.root = URL(fileURLWithPath: root).standardizedFileURL
        for dir in [self.root, uploads, blobs, jobsRoot, plansRoot] {
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw DubfarmError(.io, "cannot create the media store directory \(dir.path): \(error.localizedDescription)")
            }
        }
    }

    /// Uploads of coordinators before content addressing (random ids); still taken by jobs
    /// queued before an upgrade.
    var uploads: URL { root.appendingPathComponent("uploads", isDirectory: true) }
    /// Uploaded files named by their SHA-256, shared by every job that uses them (one video
    /// dubbed into ten languages is stored once); `SHA.part` while it is being received.
    var blobs: URL { root.appendingPathComponent("blobs", isDirectory: true) }
    var jobsRoot: URL { root.appendingPathComponent("jobs", isDirectory: true) }
    /// Plans of uploaded videos kept for the next job of the same video (``PlanCache``).
    var plansRoot: URL { root.appendingPathComponent("plans", isDirectory: true) }

    /// An upload id: the file's SHA-256 (64 lowercase hex digits), or a 32-digit id of an older
    /// coordinator. Checked before an id touches a path.
    package static func isValidUploadID(_ id: String) -> Bool {
        (id.count == 64 || id.count == 32) && id.allSatisfy { $0.isHexDigit && !$0.isUppercase }
    }
    package static func isContentID(_ id: String) -> Bool { id.count == 64 && isValidUploadID(id) }
    package func uploadPart(_ id: String) -> URL {
        Self.isContentID(id) ? blobs.appendingPathComponent("\(id).part") : uploads.appendingPathComponent("\(id).part")
    }
    package func uploadDone(_ id: String) -> URL {
        Self.isContentID(id) ? blobs.appendingPathComponent(id) : uploads.appendingPathComponent("\(id).done")
    }

    package func jobDir(_ job: JobID) -> URL { jobsRoot.appendingPathComponent(String(job.rawValue), isDirectory: true) }
    package func video(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("video") }
    package func audio(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("audio") }
    package func face(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("face") }
    /// The input re-cut with keyframes at segment starts (only for inputs whose keyframes are far apart).
    package func recut(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("recut.mp4") }
    package func packetIndex(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("packets.idx") }
    package func codec(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("codec.bin") }
    package func dubPCM(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("dub-16k.f32") }
    package func segmentsDir(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("segments", isDirectory: true) }
    /// The job's segment results, one record each (``ResultLog``).
    package func resultLog(_ job: JobID) -> URL { segmentsDir(job).appendingPathComponent("results.dfrl") }
    /// A segment's result stored as a file of its own (schema version 2; still read by the
    /// stitch); the lease token in the name keeps a stale result from touching a newer one.
    package func segmentResult(_ ref: SegmentRef, token: LeaseToken) -> URL {
        segmentsDir(ref.job).appendingPathComponent(String(format: "%06d-", ref.index) + token.description + ".dfpb")
    }
    package func output(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("output.mp4") }
    /// The job's personalisation: its dataset (`dubfarm-dataset/1`) and last checkpoint.
    package func personaliseDir(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("personalise", isDirectory: true) }
    package func personaliseDataset(_ job: JobID) -> URL { personaliseDir(job).appendingPathComponent("data", isDirectory: true) }
    package func personaliseCheckpoint(_ job: JobID) -> URL { personaliseDir(job).appendingPathComponent("checkpoint.pt") }
    /// Personalised weights, content-addressed by their SHA-256 (shared by every job that has them).
    package func weights(_ sha256: String) -> URL {
        root.appendingPathComponent("weights", isDirectory: true).appendingPathComponent("\(sha256).safetensors")
    }
    package func outputChecksum(_ job: JobID) -> URL { jobDir(job).appendingPathComponent("output.mp4.sha256") }

    /// Whether `url` lies inside the store (after resolving symbolic links).
    package func contains(_ url: URL) -> Bool {
        let r = root.resolvingSymlinksInPath().path
        let p = url.resolvingSymlinksInPath().path
        return p == r || p.hasPrefix(r + "/")
    }

    /// Whether `url` is a regular file inside the store, reached without following a symbolic
    /// link: what the control endpoint serves or takes as an upload must be the store's own file.
    package func isStoreFile(_ url: URL) -> Bool {
        var st = stat()
        guard lstat(url.path, &st) == 0, (st.st_mode & mode_t(S_IFMT)) == mode_t(S_IFREG) else { return false }
        return contains(url)
    }

    /// Writes `bytes` to `url` atomically (temporary file, fsync, rename, fsync of the directory;
    /// ``MediaFile/writeAtomically(_:to:)``), creating the directory if needed.
    package static func writeAtomically(_ bytes: [UInt8], to url: URL) throws {
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        try MediaFile.writeAtomically(bytes, to: url.path)
    }

    /// Writes `bundle` to `url` atomically as ``writeAtomically(_:to:)`` does its encoded bytes,
    /// without encoding it in memory first (``MediaFile/writeAtomically(bundle:to:)``); returns
    /// the file's size.
    @discardableResult
    /// Opens (creating it and its directory) the job's result log at `url`.
    package static func openResultLog(_ url: URL) throws -> ResultLog {
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        return try ResultLog(path: url.path)
    }

    package static func writeAtomically(bundle: PacketBundle, to url: URL) throws -> Int {
        try? FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
        return try MediaFile.writeAtomically(bundle: bundle, to: url.path)
    }

    /// Makes a rename in `dir` durable.
    package static func syncDirectory(_ dir: URL) { MediaFile.syncDirectory(dir.path) }

    package static func read(_ url: URL) throws -> [UInt8] {
        try MediaFile.read(path: url.path)
    }
}

extension [Float] {
    /// Little-endian raw bytes.
    var rawBytes: [UInt8] { withUnsafeBytes { [UInt8]($0) } }
    init(rawBytes: [UInt8]) {
        let n = rawBytes.count / 4
        self = [Float](unsafeUninitializedCapacity: n) { buf, count in
            rawBytes.withUnsafeBytes { src in
                UnsafeMutableRawBufferPointer(buf).copyMemory(from: UnsafeRawBufferPointer(start: src.baseAddress, count: n * 4))
            }
            count = n
        }
    }
}
