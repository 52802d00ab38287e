"""Answer extractors and checkers: the single source for RL rewards and for evaluation scores.

One module per kind of answer, each with the instruction a prompt gives so that the answer can be
read, the extractor (``text -> str | None``; None means nothing extractable, which always counts as
wrong) and the checker that compares it with the reference:

- `t2cli.checkers.numbers`: numbers (GSM8K), the last number of the output;
- `t2cli.checkers.choices`: lettered choices (ARC), the label stated as the answer;
- `t2cli.checkers.latex`: LaTeX answers (MATH), the last ``\\boxed{}``, equivalent after normalisation;
- `t2cli.checkers.text`: free text (tasks from data files), the text after "answer is";
- `t2cli.checkers.code`: code (MBPP, HumanEval), the program in the output, run against tests in
  `t2cli.sandbox`, never in this process.

Tasks (`t2cli.tasks`) chain them, so training and scoring can never disagree.
"""

from t2cli.checkers.choices import (
    CHOICE_INSTRUCTION,
    DEFAULT_CHOICE_LABELS,
    DIGIT_LABELS,
    LETTER_LABELS,
    choice_correct,
    choice_instruction,
    extract_choice,
    option_lines,
    stated_choice,
)
from t2cli.checkers.code import (
    CODE_INSTRUCTION,
    FUNCTION_INSTRUCTION,
    MAX_CODE_LINES,
    MAX_EXAMINED_CHARS,
    PARSE_BUDGET_CHARS,
    CheckProgram,
    as_function_body,
    check_program,
    defines_function,
    drop_example_usage,
    entry_point_of,
    example_test_instruction,
    extract_code,
    extract_solution,
    fenced,
    run_check_programs,
)
from t2cli.checkers.latex import BOXED_INSTRUCTION, extract_boxed, latex_number, math_equal, normalize_math_answer
from t2cli.checkers.numbers import (
    NUMBER_INSTRUCTION,
    extract_hash_answer,
    extract_last_number,
    numbers_equal,
    parse_number,
    stated_number,
)
from t2cli.checkers.text import (
    TEXT_INSTRUCTION,
    contains_text,
    extract_final_text,
    normalize_text,
    stated_text,
    texts_equal,
)

__all__ = [
    "BOXED_INSTRUCTION",
    "CHOICE_INSTRUCTION",
    "CODE_INSTRUCTION",
    "DEFAULT_CHOICE_LABELS",
    "DIGIT_LABELS",
    "FUNCTION_INSTRUCTION",
    "LETTER_LABELS",
    "MAX_CODE_LINES",
    "MAX_EXAMINED_CHARS",
    "NUMBER_INSTRUCTION",
    "PARSE_BUDGET_CHARS",
    "TEXT_INSTRUCTION",
    "CheckProgram",
    "as_function_body",
    "check_program",
    "choice_correct",
    "choice_instruction",
    "contains_text",
    "defines_function",
    "drop_example_usage",
    "entry_point_of",
    "extract_boxed",
    "extract_choice",
    "extract_code",
    "extract_final_text",
    "extract_hash_answer",
    "extract_last_number",
    "extract_solution",
    "fenced",
    "latex_number",
    "math_equal",
    "normalize_math_answer",
    "normalize_text",
    "numbers_equal",
    "option_lines",
    "parse_number",
    "run_check_programs",
    "stated_choice",
    "stated_number",
    "stated_text",
    "example_test_instruction",
    "texts_equal",
]
