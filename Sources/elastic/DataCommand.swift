import ArgumentParser
import ElasticServices
import Foundation

struct DataCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "data",
        abstract: "Make, import and inspect data sets (directories of checksummed shard files).",
        discussion: "Example: elastic data generate w1 --out ./data/w1 --shards 4 && elastic data inspect ./data/w1",
        subcommands: [Generate.self, Import.self, Inspect.self]
    )

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Generate a built-in data set (w1: docs/w1.md).",
            discussion: "Example: elastic data generate w1 --out ./data/w1 --shards 4"
        )

        @Argument(help: "The workload: w1.")
        var workload: String

        @Option(help: "The data set directory to write.")
        var out: String

        @Option(help: "Number of shard files.")
        var shards: Int = 1

        @Option(help: "Number of samples (W1: 65536).")
        var samples: Int = 65536

        @Option(help: "The seed (W1: 42).")
        var seed: UInt64 = 42

        @Flag(help: "Replace an existing data set in --out.")
        var force = false

        func validate() throws {
            guard workload == "w1" else { throw ValidationError("unknown workload '\(workload)'; the built-in one is w1") }
            guard shards >= 1 else { throw ValidationError("--shards must be at least 1") }
            guard samples >= 1 else { throw ValidationError("--samples must be at least 1") }
        }

        func run() async throws {
            let progress = ProgressReporter("data generate")
            let summary = try DataSets.generateW1(directory: out, seed: seed, samples: samples, shards: shards, overwrite: force, progress: progress)
            progress.finish()
            print(summary)
        }
    }

    struct Inspect: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Verify a data set and show its size, classes and shards.",
            discussion: "Example: elastic data inspect ./data/w1 --json"
        )

        @Argument(help: "The data set directory.")
        var directory: String

        @Flag(help: "Print JSON instead of a table.")
        var json = false

        func run() async throws {
            let progress = ProgressReporter("data inspect")
            let (text, valid) = try DataSets.inspect(directory: directory, json: json, progress: progress)
            progress.finish()
            print(text)
            if !valid { throw ExitCode(1) }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Import your own data: a CSV file, or NumPy .npy arrays (float32 features, int labels).",
            discussion: """
            CSV: numeric feature columns and an integer class label per line (by default the last column; a header line is detected).
            Example: elastic data import --csv train.csv --out ./data/mine --label-column last --shards 4
            Example: elastic data import --npy-features x.npy --npy-labels y.npy --out ./data/mine
            """
        )

        @Option(help: "A CSV file.")
        var csv: String?

        @Option(help: "A .npy file of float32 features (samples × features).")
        var npyFeatures: String?

        @Option(help: "A .npy file of int32 or int64 labels (samples).")
        var npyLabels: String?

        @Option(help: "The CSV label column: last, first, a 1-based number, or a header name.")
        var labelColumn: String = "last"

        @Option(help: "Whether the CSV has a header line: auto, present, absent.")
        var header: String = "auto"

        @Option(help: "Number of classes (default: the largest label + 1).")
        var classes: Int?

        @Option(help: "The data set directory to write.")
        var out: String

        @Option(help: "Number of shard files.")
        var shards: Int = 1

        @Flag(help: "Replace an existing data set in --out.")
        var force = false

        func validate() throws {
            let npy = npyFeatures != nil || npyLabels != nil
            if (csv != nil) == npy || (npy && (npyFeatures == nil || npyLabels == nil)) {
                throw ValidationError("give --csv FILE, or both --npy-features FILE and --npy-labels FILE")
            }
            guard ["auto", "present", "absent"].contains(header) else { throw ValidationError("--header must be auto, present or absent") }
            guard shards >= 1 else { throw ValidationError("--shards must be at least 1") }
        }

        func run() async throws {
            let progress = ProgressReporter("data import")
            let summary = try DataSets.importData(
                csv: csv, npyFeatures: npyFeatures, npyLabels: npyLabels, labelColumn: labelColumn, header: header,
                classes: classes, out: out, shards: shards, overwrite: force, progress: progress)
            progress.finish()
            print(summary)
        }
    }
}

struct Train: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit a job file to the running controller; it trains on the current members.",
        discussion: "Example: elastic train jobs/w1.json --data-dir ./elastic-data (docs/job-spec.md describes the file)"
    )

    @Argument(help: "The job file (JSON).")
    var job: String

    @OptionGroup var admin: AdminOptions

    func run() async throws {
        let url = URL(fileURLWithPath: job)
        guard let bytes = FileManager.default.contents(atPath: url.path) else {
            throw ValidationError("cannot read the job file '\(job)'")
        }
        let json = try DataSets.resolveJob(Array(bytes), relativeTo: url.deletingLastPathComponent())
        print(try await admin.client().submitJob(json: json))
    }
}
