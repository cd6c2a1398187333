import DubfarmCore
import Foundation
import Testing
@testable import FarmClient

/// The message of the `DubfarmError` that `body` throws (the test fails when it throws none).
func errorMessage(_ body: () throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) -> String {
    do {
        try body()
        Issue.record("no error thrown", sourceLocation: sourceLocation)
        return ""
    } catch let e as DubfarmError {
        return e.message
    } catch {
        Issue.record("not a DubfarmError: \(error)", sourceLocation: sourceLocation)
        return ""
    }
}

@Suite("Dub track languages")
struct DubLanguageTests {
    @Test("a language is read from the track's file name", arguments: [
        ("talk.es.wav", "es"), ("dub-de.wav", "de"), ("es.wav", "es"), ("episode1_pt-BR.m4a", "pt-BR"),
        ("show_es_419.wav", "es-419"), ("DE.wav", "de"), ("episode1_pt-br.m4a", "pt-BR"), ("talk.final.ES.wav", "es"),
        ("/media/dubs/show.fr.flac", "fr"),
    ])
    func guesses(file: String, lang: String) {
        #expect(DubLanguage.guess(fileName: file) == lang)
    }

    @Test("a file name without a language code gives none", arguments: ["dub.wav", "final mix.wav", "take_419.wav", "xx.wav", ".wav",
                                                                             "my_video.wav", "talk_to_x.wav", "talk.es.final.wav"])
    func noGuess(file: String) {
        #expect(DubLanguage.guess(fileName: file) == nil)
    }

    @Test("the ISO 639-1 list has all 184 codes")
    func codeCount() {
        #expect(DubLanguage.iso639_1.count == 184)
        #expect(DubLanguage.iso639_1.allSatisfy { $0.count == 2 && $0 == $0.lowercased() })
    }

    @Test("--lang values are normalised in any case", arguments: [
        ("es", "es"), ("ES", "es"), ("pt-br", "pt-BR"), ("pt_BR", "pt-BR"), ("es-419", "es-419"), ("yue", "yue"), (" de ", "de"),
    ])
    func normalise(given: String, tag: String) {
        #expect(DubLanguage.normalise(given) == tag)
        #expect(DubLanguage.isValidTag(given))
    }

    @Test("values that are not language tags are refused", arguments: ["", "e", "spanish", "xx", "es-", "es-B", "es-4190", "es-BR-x", "e5", "pt BR"])
    func invalid(given: String) {
        #expect(DubLanguage.normalise(given) == nil)
        #expect(!DubLanguage.isValidTag(given))
    }
}

@Suite("Output patterns")
struct OutputPatternTests {
    @Test("placeholders expand to the job's stems, language, name and index")
    func expands() throws {
        let p = try OutputPattern("out/{stem}-{video}.{audio}.{lang}.{name}.{index}.mp4")
        #expect(!p.isConstant)
        #expect(try p.expand(video: "in/talk.mp4", audio: "dubs/talk.es.wav", lang: "es", name: "Talk", index: 3)
                == "out/talk-talk.talk.es.es.Talk.3.mp4")
    }

    @Test("{job} expands to the job's id, and only once it has one")
    func jobPlaceholder() throws {
        let p = try OutputPattern("out/{job}.mp4")
        #expect(try p.expand(video: "v.mp4", audio: "a.wav", lang: nil, name: nil, index: 1, job: 42) == "out/42.mp4")
        #expect(errorMessage { _ = try p.expand(video: "v.mp4", audio: "a.wav", lang: nil, name: nil, index: 1) }.contains("wait --out"))
    }

    @Test("double braces are literal braces")
    func escapes() throws {
        let p = try OutputPattern("out/{{x}}-{lang}}}.mp4")
        #expect(try p.expand(video: "v.mp4", audio: "a.wav", lang: "de", name: nil, index: 1) == "out/{x}-de}.mp4")
        #expect(try OutputPattern("out/{{plain}}.mp4").isConstant)
    }

    @Test("an unknown placeholder is named, with the known ones")
    func unknown() {
        let m = errorMessage { _ = try OutputPattern("out/{language}.mp4") }
        #expect(m.contains("{language}"))
        #expect(m.contains("{stem}") && m.contains("{lang}") && m.contains("{index}"))
    }

    @Test("lone braces are refused", arguments: ["out/{stem.mp4", "out/}.mp4", ""])
    func loneBraces(pattern: String) {
        #expect(throws: DubfarmError.self) { try OutputPattern(pattern) }
    }

    @Test("{lang} without a known language says how to give one")
    func missingLang() throws {
        let p = try OutputPattern("{stem}.{lang}.mp4")
        let m = errorMessage { _ = try p.expand(video: "talk.mp4", audio: "tracks/dub.wav", lang: nil, name: nil, index: 1) }
        #expect(m == "cannot tell the language of dub.wav; name it with --lang or put it in the file name (dub.es.wav)")
        let n = errorMessage { _ = try OutputPattern("{name}.mp4").expand(video: "v.mp4", audio: "a.wav", lang: nil, name: nil, index: 1) }
        #expect(n.contains("{name}") && n.contains("--name"))
    }

    @Test("substituted values never add a directory")
    func noSeparators() throws {
        let p = try OutputPattern("out/{name}/{name}.mp4")
        #expect(try p.expand(video: "v.mp4", audio: "a.wav", lang: nil, name: "a/../b", index: 1) == "out/a_.._b/a_.._b.mp4")
        #expect(try p.expand(video: "v.mp4", audio: "a.wav", lang: nil, name: "..", index: 1) == "out/__/__.mp4")
    }
}

@Suite("Several dub tracks")
struct TrackExpansionTests {
    func expand(_ audio: [String], langs: [String] = [], out: String? = nil, name: String? = nil,
                labels: [String: String] = [:]) throws -> [PlannedSubmission] {
        try TrackExpansion.expand(video: "talk.mp4", audio: audio, langs: langs, face: "face.jpg", out: out, name: name,
                                  labels: labels, priority: 5, stage: nil, model: "swaptalk")
    }

    @Test("a directory listing keeps audio files, sorted, without hidden ones")
    func listing() {
        let names = ["b.WAV", "a.mp3", ".hidden.wav", "notes.txt", "c.opus", "video.mp4", "d.flac", "e.Ogg", "f.aac", "g.m4a", "noext"]
        #expect(TrackExpansion.audioFiles(inDirectoryListing: names) == ["a.mp3", "b.WAV", "c.opus", "d.flac", "e.Ogg", "f.aac", "g.m4a"])
    }

    @Test("ten tracks give ten jobs with distinct outputs and lang labels")
    func tenTracks() throws {
        let langs = ["es", "de", "fr", "it", "pt-BR", "ja", "ko", "zh", "ru", "es-419"]
        let audio = langs.map { "dubs/talk.\($0).wav" }
        let jobs = try expand(audio, out: "out/{stem}.{lang}.mp4", name: "Talk", labels: ["show": "s1"])
        #expect(jobs.count == 10)
        #expect(Set(jobs.compactMap(\.out)).count == 10)
        #expect(jobs.map(\.audio) == audio)
        #expect(jobs.map(\.lang) == langs)
        #expect(jobs.map { $0.labels["lang"] } == langs)
        #expect(jobs.allSatisfy { $0.labels["show"] == "s1" && $0.video == "talk.mp4" && $0.face == "face.jpg" && $0.priority == 5 })
        #expect(jobs[4].out == "out/talk.pt-BR.mp4")
        #expect(jobs[4].name == "Talk (pt-BR)")
        #expect(jobs.allSatisfy { $0.row == nil && $0.model == "swaptalk" })
    }

    @Test("one track keeps its name as given and is labelled with its language")
    func oneTrack() throws {
        let jobs = try expand(["dub.es.wav"], out: "talk-es.mp4", name: "Talk")
        #expect(jobs == [PlannedSubmission(video: "talk.mp4", audio: "dub.es.wav", face: "face.jpg", lang: "es", name: "Talk",
                                           labels: ["lang": "es"], priority: 5, out: "talk-es.mp4", model: "swaptalk")])
    }

    @Test("a track without a language is named by its stem; a given lang label wins")
    func unknownLanguage() throws {
        let jobs = try expand(["dub.es.wav", "final mix.wav"], out: "out/{audio}.mp4", name: "Talk", labels: ["lang": "xx"])
        #expect(jobs.map(\.name) == ["Talk (es)", "Talk (final mix)"])
        #expect(jobs.map { $0.labels["lang"] } == ["xx", "xx"])
        #expect(jobs[1].lang == nil)
    }

    @Test("--lang gives each track's language in order")
    func explicitLangs() throws {
        let jobs = try expand(["a.wav", "b.wav"], langs: ["ES", "pt_br"], out: "{lang}.mp4")
        #expect(jobs.map(\.lang) == ["es", "pt-BR"])
        #expect(jobs.map(\.out) == ["es.mp4", "pt-BR.mp4"])
        #expect(errorMessage { _ = try expand(["a.wav"], langs: ["spanish"]) }.contains("spanish"))
    }

    @Test("one --out file for several tracks is refused")
    func constantOut() {
        let m = errorMessage { _ = try expand(["a.es.wav", "a.de.wav"], out: "out.mp4") }
        #expect(m == "--out names one file for 2 tracks; put {lang} or {audio} in it, e.g. --out 'out/{stem}.{lang}.mp4'")
    }

    @Test("the same track twice is refused")
    func duplicateTrack() {
        #expect(errorMessage { _ = try expand(["es.wav", "de.wav", "es.wav"]) }.contains("es.wav given twice"))
        #expect(errorMessage { _ = try expand(["es.wav", "./es.wav"]) }.contains("same track"))
    }

    @Test("a --lang count that does not match the tracks is refused")
    func langCount() {
        #expect(errorMessage { _ = try expand(["a.wav", "b.wav", "c.wav"], langs: ["es", "de"]) }
                    .hasPrefix("--lang given 2 times for 3 tracks"))
    }

    @Test("two tracks with the same output are refused, naming both")
    func sameOutput() {
        let m = errorMessage { _ = try expand(["take1.es.wav", "take2.es.wav"], out: "out/{stem}.{lang}.mp4") }
        #expect(m.contains("take1.es.wav") && m.contains("take2.es.wav") && m.contains("out/talk.es.mp4"))
    }

    @Test("{lang} with a track of unknown language is refused")
    func patternNeedsLang() {
        #expect(errorMessage { _ = try expand(["dub.es.wav", "dub.wav"], out: "{lang}.mp4") }.hasPrefix("cannot tell the language of dub.wav"))
    }

    @Test("no track is refused")
    func noTrack() {
        #expect(throws: DubfarmError.self) { try expand([]) }
    }
}
