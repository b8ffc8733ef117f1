import ArgumentParser
import ElasticServices
import Foundation

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure parts of elastic against a baseline measured in the same run.",
        discussion: "Example: elastic bench allreduce --ranks 4 --mib 64",
        subcommands: [AllReduce.self]
    )

    struct AllReduce: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "allreduce",
            abstract: "Ring all-reduce over the mutual-TLS data plane vs a raw TCP ring on loopback.",
            discussion: "Example: elastic bench allreduce --ranks 4 --mib 64 (build with -c release for real figures)"
        )

        @Option(help: "Ranks in the ring.")
        var ranks: Int = 4

        @Option(help: "Buffer size in MiB.")
        var mib: Int = 64

        @Option(help: "Runs; the best is reported.")
        var repeats: Int = 3

        func validate() throws {
            guard ranks >= 2 else { throw ValidationError("--ranks must be at least 2") }
            guard mib >= 1 else { throw ValidationError("--mib must be at least 1") }
            guard repeats >= 1 else { throw ValidationError("--repeats must be at least 1") }
        }

        func run() async throws {
            let result = try await AllReduceBench.run(ranks: ranks, bytes: mib << 20, repeats: repeats)
            print(result.report)
        }
    }
}
