"""Experiential knowledge (OPCD paper): the model's own solution traces, consolidated into a context.

``python -m opcd.experience`` (conf/experience.yaml, fields: ``opcd.config.ExperienceConfig``):

1. the model solves training problems (vLLM; the problem's prompt with its given context);
2. each trace becomes experience items: ``demos`` turns correct traces into the toy world's
   ``input -> output`` lines; ``llm`` has the model write a short lesson from an extraction prompt;
3. the items accumulate into one text, cut to ``max_experience_tokens`` (whole items only);
4. several candidates (disjoint problem subsets, their own sampling seeds) are each scored as the
   context on the validation split, and the best (ties: shorter) is kept;
5. the text is written to ``out`` (plus a JSON report); ``task.experience_file=<out>`` then makes it
   the teacher's context in ``python -m opcd.train``.

Modules: ``items`` (pure logic), ``pipeline`` (engine-agnostic driver), ``__main__`` (the Hydra CLI).
What ``task.experience_file`` does to a task's records is task data: ``opcd.tasks.experience_context``.
"""
