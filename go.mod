module github.com/troupe-rl/troupe

go 1.26
