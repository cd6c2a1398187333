import ArgumentParser

@main
struct Dubfarm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dubfarm",
        abstract: "A distributed batch render farm for video dubbing.",
        subcommands: [ModelCommand.self]
    )
}
