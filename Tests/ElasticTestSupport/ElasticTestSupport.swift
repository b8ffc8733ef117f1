import Foundation

/// Seeds of randomized tests: `ELASTIC_TEST_SEED` (decimal or 0x-hex) when set, else a fixed
/// default so that runs are deterministic. Always printed, so that a failure can be replayed.
public enum TestSeed {
    public static let variable = "ELASTIC_TEST_SEED"
    public static let defaultSeed: UInt64 = 0x5EED_E1A5_71C0_0001

    public static func make(_ test: String) -> UInt64 {
        var seed = defaultSeed
        if let text = ProcessInfo.processInfo.environment[variable] {
            let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
            let parsed = trimmed.hasPrefix("0x") ? UInt64(trimmed.dropFirst(2), radix: 16) : UInt64(trimmed)
            guard let parsed else { fatalError("\(variable)=\(text) is not a decimal or 0x-hex UInt64") }
            seed = parsed
        }
        print("seed: \(seed) (\(test); replay with \(variable)=\(seed))")
        return seed
    }
}

/// The project's numpy reference of workload W1 (`reference/w1.py` in the package that holds
/// this file), or `ELASTIC_W1_REFERENCE`.
public enum W1Reference {
    public struct Missing: Error, CustomStringConvertible {
        public let description: String
    }

    public static func scriptPath(file: String = #filePath) throws -> String {
        if let path = ProcessInfo.processInfo.environment["ELASTIC_W1_REFERENCE"], !path.isEmpty {
            return path
        }
        // Up from this file to the package root (the directory with Package.swift).
        var directory = URL(fileURLWithPath: file).deletingLastPathComponent()
        while directory.path != "/" {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
                let script = directory.appendingPathComponent("reference/w1.py")
                guard FileManager.default.fileExists(atPath: script.path) else { break }
                return script.path
            }
            directory = directory.deletingLastPathComponent()
        }
        throw Missing(description: "cannot find reference/w1.py in the package that holds \(file); set ELASTIC_W1_REFERENCE to its path")
    }
}
