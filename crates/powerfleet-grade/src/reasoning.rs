//! Reasoning traces: a completion that thinks before it answers (`<think>...</think>`) is graded
//! on what follows its trace.

use powerfleet_jobs::ReasoningMarkers;

/// A completion split into its reasoning trace and its answer part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reasoning<'a> {
    /// The trace between the markers (without them); `None` when the completion has none.
    pub trace: Option<&'a str>,
    /// What the completion says after its trace (the whole completion when it has no trace);
    /// `None` when the trace never closes: such a completion states no answer.
    pub answer: Option<&'a str>,
}

/// Splits `completion` at its reasoning trace, delimited by `markers` (or `<think>` and
/// `</think>` when `None`).
///
/// - A completion holding the closing marker has a trace: from just after its opening marker
///   (if the opening marker comes before the first closing marker; otherwise from the start, as
///   models whose chat template opens the trace in the prompt write it) to the first closing
///   marker. The answer is everything after that closing marker.
/// - A completion that opens a trace and never closes it has no answer.
/// - A completion with neither marker is all answer.
pub fn split_reasoning<'a>(
    completion: &'a str,
    markers: Option<&ReasoningMarkers>,
) -> Reasoning<'a> {
    let default = ReasoningMarkers::default();
    let markers = markers.unwrap_or(&default);
    let (open, close) = (markers.open.as_str(), markers.close.as_str());
    let open_at = (!open.is_empty()).then(|| completion.find(open)).flatten();
    match (!close.is_empty())
        .then(|| completion.find(close))
        .flatten()
    {
        Some(close_at) => {
            let start = match open_at {
                Some(at) if at + open.len() <= close_at => at + open.len(),
                _ => 0,
            };
            Reasoning {
                trace: Some(&completion[start..close_at]),
                answer: Some(&completion[close_at + close.len()..]),
            }
        }
        None => match open_at {
            Some(at) => Reasoning {
                trace: Some(&completion[at + open.len()..]),
                answer: None,
            },
            None => Reasoning {
                trace: None,
                answer: Some(completion),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_trace() {
        let r = split_reasoning("<think>try 3</think>\\boxed{4}", None);
        assert_eq!((r.trace, r.answer), (Some("try 3"), Some("\\boxed{4}")));
        let r = split_reasoning("try 3</think>so 4", None);
        assert_eq!((r.trace, r.answer), (Some("try 3"), Some("so 4")));
        let r = split_reasoning("<think>try 3, \\boxed{3}", None);
        assert_eq!((r.trace, r.answer), (Some("try 3, \\boxed{3}"), None));
        let r = split_reasoning("plain \\boxed{4}", None);
        assert_eq!((r.trace, r.answer), (None, Some("plain \\boxed{4}")));
        let markers = ReasoningMarkers {
            open: "[R]".into(),
            close: "[/R]".into(),
        };
        let r = split_reasoning("[R]x[/R]y<think>", Some(&markers));
        assert_eq!((r.trace, r.answer), (Some("x"), Some("y<think>")));
    }
}
