package reward

// Item is one completion to score: the prompt (after the data template) and
// the sampled response without its end-of-text token.
type Item struct {
	PromptText   string  // e.g. "28+52="
	Prompt       []int32 // PromptText's tokens
	Response     []int32 // sampled tokens, end-of-text removed
	ResponseText string  // Response decoded, e.g. "80"
	Answer       string  // the task's true answer, "" when the data has none
	Stopped      bool    // the completion ended with end-of-text (false = truncated)
}

// Score is one item's reward: Total, and the parts it sums (each unweighted), by name,
// e.g. {"rm": 1.2, "exact_match": 1, "missing_eos": -1}.
type Score struct {
	Total float64
	Parts map[string]float64
}

// Scorer turns completions into sequence rewards: a trained reward model, a
// rule (exact answer, length, format) or a weighted sum of several. A Scorer is
// not safe for concurrent use; each reward actor owns one.
type Scorer interface {
	Score(items []Item) ([]Score, error)
}
