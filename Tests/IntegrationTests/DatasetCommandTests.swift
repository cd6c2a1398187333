import DubfarmCore
import Foundation
import Testing

extension Integration {
    @Suite("dataset build command", .serialized, .enabled(if: haveMedia, "needs ../shared/media"))
    struct DatasetCommandTests {
        @Test("dataset build: a shard and index.json, progress per clip on stderr, unusable inputs named and skipped; none usable exits 2")
        func build() throws {
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("dubfarm-dataset-cli-\(UUID().uuidString.prefix(8))")
            defer { try? FileManager.default.removeItem(at: dir) }
            let out = dir.appendingPathComponent("data").path
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            let notes = dir.appendingPathComponent("notes.txt").path
            try Data("hello\n".utf8).write(to: URL(fileURLWithPath: notes))
            let tsv = dir.appendingPathComponent("speakers.tsv").path
            try Data("# stem\tspeaker\nspeaker-c\tperson-c\n".utf8).write(to: URL(fileURLWithPath: tsv))
            let r = try dubfarm(["dataset", "build", media("speaker-c.mp4"), notes, "--out", out, "--config", "tiny",
                                 "--speakers", tsv, "--max-frames", "12"])
            #expect(r.status == 0, "\(r.err)")
            #expect(r.err.contains("speaker-c.mp4: 12 frames"), "\(r.err)")
            #expect(r.err.contains("notes.txt: skipped"), "\(r.err)")
            let index = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: out + "/index.json"))) as? [String: Any])
            #expect(index["format"] as? String == "dubfarm-dataset/1")
            #expect(index["imageSize"] as? Int == 16)
            #expect(index["speakers"] as? [String] == ["person-c"])
            #expect(FileManager.default.fileExists(atPath: out + "/shard-00000.safetensors"))

            let none = try dubfarm(["dataset", "build", notes, "--out", dir.appendingPathComponent("none").path])
            #expect(none.status == 2)
            #expect(none.err.contains("notes.txt"), "\(none.err)")
            #expect(try dubfarm(["dataset", "build", media("speaker-c.mp4"), "--out", out, "--config", "huge"]).status == 2)
        }
    }
}
