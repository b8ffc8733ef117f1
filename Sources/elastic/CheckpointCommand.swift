import ArgumentParser
import ElasticServices
import ElasticStorage
import Foundation

struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "List, verify, inspect, export and copy checkpoints (docs/checkpoint-format.md).",
        discussion: """
        A checkpoint root holds step-NNNNNNNN directories and a 'latest' pointer. Where a
        checkpoint is expected, give a step directory, ROOT/latest, or ROOT (its latest).
        Example: elastic checkpoint list ./checkpoints/w1 --verify
        """,
        subcommands: [List.self, Verify.self, Inspect.self, Export.self, Copy.self]
    )

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the checkpoints of a root: step, time, size, ratio, valid?",
            discussion: """
            Example: elastic checkpoint list ./checkpoints/w1 --verify
            Example: elastic checkpoint list ./checkpoints/w1 --json
            """
        )

        @Argument(help: "The checkpoint root (the job's checkpoint.directory).")
        var root: String

        @Flag(help: "Verify every checksum of every checkpoint (default: the structure only).")
        var verify = false

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        func run() async throws {
            let entries = try Checkpoints.list(root: root, verifyAll: verify, progress: ProgressReporter("checkpoint list"))
            print(json ? try encodeJSON(entries) : Checkpoints.listTable(entries, root: root))
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check every size and checksum of a checkpoint; the exit status says whether it is valid.",
            discussion: """
            Example: elastic checkpoint verify ./checkpoints/w1/step-00000100
            Example: elastic checkpoint verify ./checkpoints/w1 --json
            """
        )

        @Argument(help: "A step directory, ROOT/latest or ROOT.")
        var checkpoint: String

        @Flag(help: "Print JSON instead of text (the exit status still says whether it is valid).")
        var json = false

        func run() async throws {
            let report = Checkpoints.verifyReport(try Checkpoints.resolve(checkpoint), progress: ProgressReporter("checkpoint verify"))
            print(json ? try encodeJSON(report) : Checkpoints.verifyText(report))
            if !report.valid { throw ExitCode(2) }
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show a checkpoint's manifest: step, data cursor, plan, and every tensor's transform, codec and sizes.",
            discussion: "Example: elastic checkpoint inspect ./checkpoints/w1/latest --json"
        )

        @Argument(help: "A step directory, ROOT/latest or ROOT.")
        var checkpoint: String

        @Flag(help: "Print the manifest as JSON.")
        var json = false

        func run() async throws {
            print(try Checkpoints.inspect(try Checkpoints.resolve(checkpoint), json: json))
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write every tensor of a checkpoint (verified) to a NumPy .npz file.",
            discussion: """
            Arrays are named layer<i>.<tensor> (layer0.weight, layer0.bias, layer0.weight.velocity, …),
            with int64 scalars step and layer<i>.optimizer_step.
            Example: elastic checkpoint export ./checkpoints/w1/latest --npz w1.npz
                     python3 -c "import numpy; print(numpy.load('w1.npz')['layer0.weight'].shape)"
            """
        )

        @Argument(help: "A step directory, ROOT/latest or ROOT.")
        var checkpoint: String

        @Option(help: "The .npz file to write.")
        var npz: String

        func run() async throws {
            print(try Checkpoints.exportNPZ(try Checkpoints.resolve(checkpoint), to: npz, progress: ProgressReporter("checkpoint export")))
        }
    }

    struct Copy: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a checkpoint and write it into another root (atomically, optionally at another zstd level).",
            discussion: "Example: elastic checkpoint copy ./checkpoints/w1/latest /mnt/backup/w1 --level 3"
        )

        @Argument(help: "A step directory, ROOT/latest or ROOT.")
        var checkpoint: String

        @Argument(help: "The root to write into.")
        var destination: String

        @Option(help: "zstd level (-7…22).")
        var level: Int = Int(CheckpointWriteOptions.defaultLevel)

        @Option(help: "Byte-plane shuffle of float tensors: auto, always or never.")
        var shuffle: String = "auto"

        @Option(help: "zstd worker threads (0: compress on this thread).")
        var threads: Int = 0

        func validate() throws {
            guard (-7...22).contains(level) else { throw ValidationError("--level must be between -7 and 22") }
            guard CheckpointWriteOptions.ShufflePolicy(rawValue: shuffle) != nil else { throw ValidationError("--shuffle must be auto, always or never") }
            guard (0...64).contains(threads) else { throw ValidationError("--threads must be between 0 and 64") }
        }

        func run() async throws {
            let options = CheckpointWriteOptions(level: Int32(level), shuffle: CheckpointWriteOptions.ShufflePolicy(rawValue: shuffle) ?? .auto, compressionThreads: threads)
            let summary = try Checkpoints.copy(try Checkpoints.resolve(checkpoint), to: destination, options: options, progress: ProgressReporter("checkpoint copy"))
            print("copied step \(summary.step) to \(summary.path) (\(summary.rawBytes) bytes raw, \(summary.storedBytes) stored, ratio \(String(format: "%.3f", summary.ratio)))")
        }
    }
}

/// Pretty, key-sorted JSON, as every `--json` prints.
func encodeJSON(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
