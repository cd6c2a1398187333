import Foundation

/// The media store's files as `dubfarm gc` sees them: uploads (by content id, finished or
/// partial) and the size of a job's directory.
enum MediaRetention {
    struct UploadFile {
        var url: URL
        /// The SHA-256 (or an older coordinator's upload id) jobs name it by.
        var id: String
        var partial: Bool
        var bytes: Int64
        var modified: Date
    }

    /// Every upload file: `blobs/SHA`, `blobs/SHA.part`, and the older `uploads/ID.done|.part`.
    static func uploadFiles(_ media: MediaStore) -> [UploadFile] {
        var out: [UploadFile] = []
        let keys: [URLResourceKey] = [.fileSizeKey, .contentModificationDateKey, .isRegularFileKey]
        for dir in [media.blobs, media.uploads] {
            let entries = (try? FileManager.default.contentsOfDirectory(at: dir, includingPropertiesForKeys: keys)) ?? []
            for url in entries {
                let name = url.lastPathComponent
                let partial = name.hasSuffix(".part")
                let id = partial ? String(name.dropLast(5)) : name.hasSuffix(".done") ? String(name.dropLast(5)) : name
                guard MediaStore.isValidUploadID(id), let v = try? url.resourceValues(forKeys: Set(keys)), v.isRegularFile == true else { continue }
                out.append(UploadFile(url: url, id: id, partial: partial, bytes: Int64(v.fileSize ?? 0),
                                      modified: v.contentModificationDate ?? .distantPast))
            }
        }
        return out
    }

    /// A kept plan (``PlanCache``): `plans/SHA-KEY`, or a staging directory left by a crash.
    struct PlanDirectory {
        var url: URL
        /// The video's SHA-256 (nil for a staging directory).
        var video: String?
        var modified: Date
    }

    static func planDirectories(_ media: MediaStore) -> [PlanDirectory] {
        let entries = (try? FileManager.default.contentsOfDirectory(at: media.plansRoot, includingPropertiesForKeys: [.contentModificationDateKey])) ?? []
        return entries.map { url in
            let name = url.lastPathComponent
            let sha = name.split(separator: "-").first.map(String.init)
            let modified = (try? url.resourceValues(forKeys: [.contentModificationDateKey]).contentModificationDate) ?? .distantPast
            return PlanDirectory(url: url, video: name.hasPrefix(".") ? nil : sha.flatMap { MediaStore.isContentID($0) ? $0 : nil }, modified: modified)
        }
    }

    /// Bytes of the regular files under `dir` (hard links to uploads counted in full).
    static func bytes(under dir: URL) -> Int64 {
        guard let e = FileManager.default.enumerator(at: dir, includingPropertiesForKeys: [.fileSizeKey, .isRegularFileKey]) else { return 0 }
        var total: Int64 = 0
        for case let url as URL in e {
            if let v = try? url.resourceValues(forKeys: [.fileSizeKey, .isRegularFileKey]), v.isRegularFile == true { total += Int64(v.fileSize ?? 0) }
        }
        return total
    }
}
