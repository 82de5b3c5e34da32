"""QLoRA fine-tuning for the regulations chatbot: dataset preparation, training, merge, Replicate trainings.

``training.data`` turns Alpaca, chat and question/answer JSONL into prompt/completion
records rendered by ``rag.prompt`` (the serving prompt builder); ``training.train_qlora``
trains a LoRA adapter with TRL's SFTTrainer; ``training.merge_adapter`` merges an adapter
into its fp16/bf16 base and verifies the result; ``training.replicate_train`` is Cog's
``train`` entry. Nothing heavy is imported here.
"""

from __future__ import annotations

import sys
from typing import Any, Callable


def run_cli(main: Callable[[], Any]) -> int:
    """Run a script's ``main``: a RagError is printed as ``error [code]: message`` (exit 2), never a traceback;
    its lines are kept (a dataset's problems, one per line). Ctrl-C exits 130 with what ``main`` printed about it."""
    from rag.errors import RagError, redact_lines

    try:
        main()
    except RagError as e:
        print(f"error [{e.code}]: {redact_lines(str(e), client=False)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
