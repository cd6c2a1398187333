import DubfarmCore
import Foundation
import Testing
@testable import FarmClient

/// A scratch directory of empty files, removed when the test ends.
final class ScratchDirectory {
    let path: String

    init(files: [String]) throws {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("farmclient-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        for f in files {
            let full = path + "/" + f
            try FileManager.default.createDirectory(atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            #expect(FileManager.default.createFile(atPath: full, contents: Data()))
        }
    }

    func write(_ name: String, _ text: String) throws -> String {
        let full = path + "/" + name
        try text.write(toFile: full, atomically: true, encoding: .utf8)
        return full
    }

    deinit { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("Submission manifests")
struct ManifestTests {
    /// Files that exist, for `fileKind`: everything under /m except what is listed otherwise.
    static func kinds(missing: Set<String> = [], directories: Set<String> = [], unreadable: Set<String> = [])
        -> (String) -> SubmissionManifest.FileKind {
        { path in
            if missing.contains(path) { return .missing }
            if directories.contains(path) { return .directory }
            if unreadable.contains(path) { return .unreadable }
            return .file
        }
    }

    func csv(_ text: String, kinds: (String) -> SubmissionManifest.FileKind = ManifestTests.kinds()) throws -> [PlannedSubmission] {
        try SubmissionManifest.parse(text: text, format: .csv, baseDirectory: "/m", name: "jobs.csv", fileKind: kinds)
    }

    func yaml(_ text: String, kinds: (String) -> SubmissionManifest.FileKind = ManifestTests.kinds()) throws -> [PlannedSubmission] {
        try SubmissionManifest.parse(text: text, format: .yaml, baseDirectory: "/m", name: "jobs.yaml", fileKind: kinds)
    }

    @Test("the format is told by the extension")
    func format() {
        #expect(SubmissionManifest.Format(path: "a/jobs.CSV") == .csv)
        #expect(SubmissionManifest.Format(path: "jobs.yml") == .yaml)
        #expect(SubmissionManifest.Format(path: "jobs.yaml") == .yaml)
        #expect(SubmissionManifest.Format(path: "jobs.json") == nil)
        #expect(SubmissionManifest.Format(path: "csv") == nil)
    }

    @Test("a good CSV manifest gives every row in order, with paths resolved")
    func goodCSV() throws {
        let jobs = try csv("""
            Video, AUDIO ,face,priority,out,labels,name,lang,stage,model
            talk.mp4,dubs/talk.es.wav,,3,out/{stem}.{lang}.mp4,show=s1;season=2,Talk ES,,,
            /abs/talk.mp4,dubs/dub.wav,me.jpg,,"out/{index}.mp4","show=s1,kind=promo",,pt_br,dub,swaptalk@2

            ~/x/v.mp4,a.de.wav,,-1,,,,,,

            """)
        #expect(jobs.count == 3)
        #expect(jobs[0] == PlannedSubmission(video: "/m/talk.mp4", audio: "/m/dubs/talk.es.wav", lang: "es", name: "Talk ES",
                                             labels: ["show": "s1", "season": "2", "lang": "es"], priority: 3, out: "/m/out/talk.es.mp4", row: 2))
        #expect(jobs[1] == PlannedSubmission(video: "/abs/talk.mp4", audio: "/m/dubs/dub.wav", face: "/m/me.jpg", lang: "pt-BR",
                                             labels: ["show": "s1", "kind": "promo", "lang": "pt-BR"], out: "/m/out/2.mp4", stage: "dub",
                                             model: "swaptalk@2", row: 3))
        let home = ProcessInfo.processInfo.environment["HOME"] ?? "~"
        #expect(jobs[2].video == ClientPath.clean(home + "/x/v.mp4"))
        #expect(jobs[2].priority == -1 && jobs[2].lang == "de" && jobs[2].out == nil)
        #expect(jobs[2].row == 5)
    }

    @Test("a bad CSV manifest reports every problem of every row at once")
    func badCSV() {
        let m = errorMessage {
            _ = try csv("""
                video,audio,priority,labels,lang
                talk.mp4,es.wav,1,,
                talk.mp4,missing.wav,high,,
                dir,de.wav,,Bad=1,klingon
                """, kinds: Self.kinds(missing: ["/m/missing.wav"], directories: ["/m/dir"]))
        }
        #expect(m.hasPrefix("jobs.csv: 5 problems, nothing was submitted:\n"))
        #expect(m.contains("\n  row 3: audio missing.wav: no such file"))
        #expect(m.contains("\n  row 3: priority 'high' is not a whole number"))
        #expect(m.contains("\n  row 4: video dir: is a directory, not a file"))
        #expect(m.contains("\n  row 4: labels: label key 'Bad'"))
        #expect(m.contains("\n  row 4: lang 'klingon'"))
        #expect(!m.contains("row 2"))
    }

    @Test("missing values, unreadable files and a missing column are reported")
    func missingValues() {
        let m = errorMessage {
            _ = try csv("video,face\n,f.jpg\nv.mp4,\n", kinds: Self.kinds(unreadable: ["/m/f.jpg"]))
        }
        #expect(m.contains("header: no audio column"))
        #expect(m.contains("row 2: no video given"))
        #expect(m.contains("row 2: face f.jpg: not readable"))
        #expect(!m.contains("no audio given"))
        #expect(m.hasPrefix("jobs.csv: 3 problems"))
    }

    @Test("an unknown column is named with the known ones")
    func unknownColumn() {
        let m = errorMessage { _ = try csv("video,audio,prio\nv.mp4,a.wav,3\n") }
        #expect(m.contains("header: unknown column 'prio'; columns are video, audio, face"))
        #expect(m.hasPrefix("jobs.csv: 1 problem, nothing was submitted:"))
    }

    @Test("rows are numbered by the line they start on, across quoted line breaks")
    func rowNumbers() {
        let m = errorMessage { _ = try csv("\nvideo,audio,name\nv.mp4,a.wav,\"two\nlines\"\n\nv.mp4,gone.wav,x\n",
                                          kinds: Self.kinds(missing: ["/m/gone.wav"])) }
        #expect(m.contains("row 6: audio gone.wav: no such file"))
    }

    @Test("extra cells beyond the header are reported")
    func extraCells() {
        #expect(errorMessage { _ = try csv("video,audio\nv.mp4,a.wav,oops\n") }.contains("row 2: 3 cells but the header names 2 columns"))
    }

    @Test("two rows with the same output are refused")
    func duplicateOutputs() {
        let m = errorMessage {
            _ = try csv("""
                video,audio,out
                a.mp4,a.es.wav,out/{lang}.mp4
                b.mp4,b.de.wav,out/{lang}.mp4
                c.mp4,c.es.wav,./out/es.mp4
                """)
        }
        #expect(m.contains("row 4: out /m/out/es.mp4 is also row 2's output"))
        #expect(m.hasPrefix("jobs.csv: 1 problem"))
    }

    @Test("{lang} with no language to read asks for a lang column")
    func outNeedsLang() {
        let m = errorMessage { _ = try csv("video,audio,out\nv.mp4,dub.wav,{stem}.{lang}.mp4\n") }
        #expect(m.contains("row 2: out uses {lang} but cannot tell the language of dub.wav; give it in a lang column"))
        #expect(errorMessage { _ = try csv("video,audio,out\nv.mp4,dub.wav,{bogus}.mp4\n") }.contains("row 2: out: "))
    }

    @Test("a manifest without jobs is refused", arguments: ["video,audio\n", "video,audio\n\n,\n"])
    func empty(text: String) {
        #expect(errorMessage { _ = try csv(text) } == "jobs.csv: no jobs in it")
    }

    @Test("YAML manifests may be a list or a mapping with jobs:")
    func yamlShapes() throws {
        let list = try yaml("""
            - video: talk.mp4
              audio: talk.es.wav
              labels: {show: s1, season: 2}
              priority: 7
              out: out/{stem}.{lang}.mp4
            - {video: b.mp4, audio: b.wav, lang: DE, name: B, labels: "x=1;y=2"}
            """)
        let mapping = try yaml("""
            jobs:
              - video: talk.mp4
                audio: talk.es.wav
                labels:
                  show: s1
                  season: 2
                priority: 7
                out: out/{stem}.{lang}.mp4
              - video: b.mp4
                audio: b.wav
                lang: de
                name: B
                labels: [x=1, y=2]
            """)
        #expect(list == mapping)
        #expect(list.count == 2)
        #expect(list[0] == PlannedSubmission(video: "/m/talk.mp4", audio: "/m/talk.es.wav", lang: "es",
                                             labels: ["show": "s1", "season": "2", "lang": "es"], priority: 7, out: "/m/out/talk.es.mp4", row: 1))
        #expect(list[1].lang == "de" && list[1].name == "B" && list[1].labels == ["x": "1", "y": "2", "lang": "de"] && list[1].row == 2)
    }

    @Test("YAML problems are reported per job")
    func yamlProblems() {
        let m = errorMessage {
            _ = try yaml("""
                jobs:
                  - {video: a.mp4, audio: a.wav}
                  - {video: a.mp4, audio: a.wav, priority: 1.5, vidoe: x}
                  - {video: [a.mp4], audio: a.wav}
                """)
        }
        #expect(m.hasPrefix("jobs.yaml: 3 problems, nothing was submitted:"))
        #expect(m.contains("job 2: unknown key 'vidoe'"))
        #expect(m.contains("job 2: priority '1.5' is not a whole number"))
        #expect(m.contains("job 3: video must be a single value"))
    }

    @Test("YAML of the wrong shape is refused", arguments: ["video: a.mp4\n", "jobs: 3\n", "42\n", "- [a]\n: :\n"])
    func yamlShape(text: String) {
        #expect(throws: DubfarmError.self) { try yaml(text) }
    }

    @Test("an empty YAML manifest has no jobs", arguments: ["", "jobs:\n", "[]\n"])
    func yamlEmpty(text: String) {
        #expect(errorMessage { _ = try yaml(text) } == "jobs.yaml: no jobs in it")
    }

    @Test("load reads real files relative to the manifest's directory")
    func load() throws {
        let dir = try ScratchDirectory(files: ["media/talk.mp4", "media/talk.es.wav", "media/talk.de.wav"])
        let path = try dir.write("jobs.csv", "video,audio,out\nmedia/talk.mp4,media/talk.es.wav,{lang}.mp4\nmedia/talk.mp4,media/talk.de.wav,{lang}.mp4\n")
        let jobs = try SubmissionManifest.load(path: path)
        #expect(jobs.map(\.audio) == [dir.path + "/media/talk.es.wav", dir.path + "/media/talk.de.wav"])
        #expect(jobs.map(\.out) == [dir.path + "/es.mp4", dir.path + "/de.mp4"])

        let bad = try dir.write("bad.yml", "- {video: media/talk.mp4, audio: media/talk.fr.wav}\n- {video: media, audio: media/talk.es.wav}\n")
        let m = errorMessage { _ = try SubmissionManifest.load(path: bad) }
        #expect(m.hasPrefix("bad.yml: 2 problems, nothing was submitted:"))
        #expect(m.contains("job 1: audio media/talk.fr.wav: no such file"))
        #expect(m.contains("job 2: video media: is a directory, not a file"))

        #expect(errorMessage { _ = try SubmissionManifest.load(path: dir.path + "/none.csv") }.contains("no such manifest file"))
        #expect(errorMessage { _ = try SubmissionManifest.load(path: try dir.write("jobs.txt", "")) }.contains(".csv, .yaml or .yml"))
    }
}
