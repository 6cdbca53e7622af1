"""The judge template the operator ships beside every dataset it exports (``judge_prompt.txt``).

The backend's export names ``judge_prompt.txt`` in ``scoring_params`` but no such file travels with it; the
operator puts this one beside the dataset in the dataset Secret, so the runner finds the file the suite
names, as the course's pipeline finds its own. Same placeholders and grades as the course's template;
``{{``/``}}`` are not needed, since it holds no literal braces.
"""

from __future__ import annotations

JUDGE_TEMPLATE_FILE = "judge_prompt.txt"

JUDGE_TEMPLATE = """\
You compare a generated answer with an expected answer to the same request.
Ignore differences in style, grammar and punctuation; compare only the content.

[Request]: {input_query}
[Expected answer]: {expected_answer}
[Generated answer]: {generated_answer}

Pick exactly one option:
(A) The generated answer is a subset of the expected answer and fully consistent with it.
(B) The generated answer is a superset of the expected answer and fully consistent with it.
(C) The generated answer contains all the same details as the expected answer.
(D) The generated answer and the expected answer disagree.
(E) The answers differ, but the differences do not matter for the request.

End your reply with a line of the form "Answer: <letter>".
"""
